"""What a party's own node lets protocols do: key sizes, batch sizes, alignment, DP releases.

A protection belongs to the party whose data it protects. Every setting here comes from the
policy of the node that runs the protocol step (its own governance home), never from a job
spec or a peer's message: a job may ask for *more* protection than these limits, never less.
Protocol steps read them through :attr:`models.protocol.PartyContext.guard` and refuse with
:class:`PolicyRefusalError`, naming the setting, when a peer asks for less.

Differential privacy works the same way: the node that holds the data computes the noise of
its releases from its own grant (:class:`ReleaseGrant`, fixed when the node reserved the job's
privacy budget in its own ledger) and counts every release itself; the ledger is charged from
that count. A peer's message can neither lower the noise nor add a release.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from models.privacy import PrivacyEvent
from models.protocol import ProtocolError
from secure_agg.compute import LOCAL as LOCAL_COMPUTE
from secure_agg.compute import ComputeSettings
from secure_agg.paillier import DEFAULT_KEY_BITS
from secure_agg.schemes import DEFAULT_SCHEME, SCHEMES

#: Longest peer modulus a node accepts by default. 8192 bits is beyond every security level
#: anyone asks for here (NIST SP 800-57 rates 7680 bits at 192-bit security) and keeps a peer's
#: fixed-base tables to about 0.5 GB (OU: (plaintext + obfuscation exponent bytes) x 255 rows of
#: key_bytes each); the tables grow with the square of the key length, 32 GB at 65,536 bits.
MAX_KEY_BITS = 8192

#: Reveal modes of the private set intersection (see :mod:`models.alignment.protocol`).
ALL_REVEAL_MODES = ("both", "size", "bank")


class PolicyRefusalError(ProtocolError):
    """A node's own policy does not allow what a job or a peer asked for.

    The message names the policy setting and how the node's owner could change it; it carries
    no data, so it is always safe to send to the coordinator.
    """


@dataclass(frozen=True)
class NodeLimits:
    """A node's limits on what protocols may do with its data (from its own policy).

    Attributes
    ----------
    min_key_bits : int
        Shortest modulus (Paillier or OU) the node accepts from a peer or generates itself.
    max_key_bits : int
        Longest modulus the node accepts from a peer (:data:`MAX_KEY_BITS` by default): a
        peer's key sizes the tables and exponentiations this node computes with it, so a huge
        modulus would cost it gigabytes and hours.
    allow_insecure_test_keys : bool
        Accept keys below the 2048-bit floor of :mod:`secure_agg.paillier` (test homes only).
    allowed_schemes : tuple of str
        Homomorphic schemes (:data:`secure_agg.schemes.SCHEMES`) the node takes part in; only
        :data:`~secure_agg.schemes.DEFAULT_SCHEME` (Paillier) unless its owner opts in.
    psi_reveal : tuple of str
        Reveal modes of the alignment this node takes part in. ``bank`` is off by default: the
        platform would not learn what the bank learned, so it could not tell a probe.
    psi_max_bank_ratio : float
        Largest ``|bank set| / |served set|`` the platform aligns with; above it the bank's
        candidate list is a probe of the platform's membership and the alignment is refused.
    psi_alert_bank_ratio : float
        Ratio above which an alignment is allowed but raises a ``psi_probe_suspected`` alert.
    psi_alert_hit_rate : float
        Intersection share of the bank's set below which an alert is raised (a bank that sends
        mostly ids the platform does not serve is looking for members).
    min_batch_size : int
        Fewest rows of one hetero LR mini-batch: the bank learns weighted sums of the platform's
        partial logits per batch, and with one row a sum is that row's partial logit.
    rows_per_cross_term : int
        A hetero LR batch must also hold this many rows per weighted sum (cross term) the bank
        asks the platform to decrypt, so the sums never determine single rows.
    validation_serve : bool
        Whether the node routes (SecureBoost: one left/right bit per split) or scores (hetero
        LR: its partial logit) the bank's validation rows after every iteration, as it scores
        a bank's test rows once at the end. Validation and early stopping need it.
    validation_max_share : float
        Largest share of validation rows among the rows the bank trains and validates on.
    group_attribution : bool
        Release, with a SecureBoost part at the end of training, the published feature group
        of each of this node's splits, so the bank can explain scores by group (never a
        column, threshold or value). ``False``: the node withholds them and says so.
    csi_detail : {"group", "feature"}
        What a platform shares of its columns' stability in screening: per feature group only
        (the default), or each column's index and bin counts (never bin edges).
    max_bins : int
        Most bins per column the node fits when their statistics leave its domain (a platform's
        SecureBoost histograms, hetero LR WOE counts, screening and monitoring bins): the bank
        chooses the number in its job, and finer bins show it finer partitions of the node's
        rows (per-bin gradient sums and counts of a few rows each).
    compute : ComputeSettings
        Where the node's batches run (:mod:`secure_agg.compute`): its local workers, or a Ray
        cluster of its own. Set by its owner only; a protocol step runs under it.
    """

    min_key_bits: int = DEFAULT_KEY_BITS
    max_key_bits: int = MAX_KEY_BITS
    allow_insecure_test_keys: bool = False
    allowed_schemes: tuple[str, ...] = (DEFAULT_SCHEME,)
    psi_reveal: tuple[str, ...] = ("both", "size")
    psi_max_bank_ratio: float = 20.0
    psi_alert_bank_ratio: float = 5.0
    psi_alert_hit_rate: float = 0.05
    min_batch_size: int = 256
    rows_per_cross_term: int = 8
    validation_serve: bool = True
    validation_max_share: float = 0.5
    group_attribution: bool = True
    csi_detail: str = "group"
    max_bins: int = 64
    compute: ComputeSettings = LOCAL_COMPUTE

    def key_bits_for(self, requested: int) -> int:
        """Size of a key this node generates: the job's ask, never below the node's floor."""
        return max(int(requested), self.min_key_bits)

    def check_key(self, key_bits: int, whose: str) -> None:
        """Refuse a peer's (or a job's) key shorter or longer than this node accepts.

        Call it before anything is computed with the key (no table is built before).

        Raises
        ------
        PolicyRefusalError
            Naming the key, its size and the setting.
        """
        ceiling = self.max_key_bits
        if key_bits > ceiling:
            raise PolicyRefusalError(
                f"{whose}: {key_bits} bits, above this node's policy crypto.max_key_bits="
                f"{ceiling}; use keys of at most {ceiling} bits"
            )
        floor = self.min_key_bits
        if key_bits < floor:
            raise PolicyRefusalError(
                f"{whose}: {key_bits} bits, below this node's policy crypto.min_key_bits="
                f"{floor}; use keys of {floor}+ bits"
            )
        if key_bits < DEFAULT_KEY_BITS and not self.allow_insecure_test_keys:
            raise PolicyRefusalError(
                f"{whose}: {key_bits} bits, a test key below {DEFAULT_KEY_BITS}; this node's "
                "policy refuses test keys (crypto.allow_insecure_test_keys=false)"
            )

    def check_scheme(self, scheme: str, whose: str) -> None:
        """Refuse a homomorphic scheme the node's policy does not allow.

        Raises
        ------
        PolicyRefusalError
            Naming the scheme and the setting ``crypto.allowed_schemes``.
        """
        if scheme not in self.allowed_schemes:
            raise PolicyRefusalError(
                f"{whose}: {scheme!r} is not allowed by this node's policy "
                f"crypto.allowed_schemes={list(self.allowed_schemes)}; its owner may add it "
                f"(lab policy set 'crypto.allowed_schemes=[...]'), or the job may use "
                f"{self.allowed_schemes[0]!r}"
            )

    def check_validation(self, n_valid: int, n_train: int) -> None:
        """Refuse validation rows the node's policy does not serve (counted from the masks).

        Raises
        ------
        PolicyRefusalError
            Naming the setting (``validation.serve`` or ``validation.max_share``) and the fix.
        """
        self.check_validation_share(
            n_valid / max(1, n_valid + n_train), f"{n_valid} validation rows of {n_valid + n_train}"
        )

    def check_validation_share(self, share: float, what: str) -> None:
        """Refuse a share of validation rows (``what`` names it) the node does not serve.

        Raises
        ------
        PolicyRefusalError
            Naming the setting (``validation.serve`` or ``validation.max_share``) and the fix.
        """
        if share <= 0.0:
            return
        if not self.validation_serve:
            raise PolicyRefusalError(
                f"{what}: this node's policy validation.serve=false scores no validation rows "
                "per iteration; train without validation (model.validation_fraction: 0, no "
                "early_stopping_rounds), or its owner may run "
                "'lab policy set validation.serve=true'"
            )
        if share > self.validation_max_share:
            raise PolicyRefusalError(
                f"{what} ({share:.0%}): above this node's policy validation.max_share="
                f"{self.validation_max_share:g}; use a smaller model.validation_fraction"
            )

    def check_bins(self, n_bins: int, what: str) -> None:
        """Refuse more bins per column (``what`` names the setting) than the node fits.

        Raises
        ------
        PolicyRefusalError
            Naming the setting, the number asked for and ``binning.max_bins``.
        """
        if n_bins > self.max_bins:
            raise PolicyRefusalError(
                f"{what}={n_bins}: more bins per column than this node's policy "
                f"binning.max_bins={self.max_bins} allows; ask for at most {self.max_bins}"
            )

    def check_reveal(self, reveal: str) -> None:
        """Refuse an alignment reveal mode the node's policy does not allow."""
        if reveal not in self.psi_reveal:
            raise PolicyRefusalError(
                f"alignment reveal mode {reveal!r} is not allowed by this node's policy "
                f"(psi.reveal={list(self.psi_reveal)})"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored in a node's job state)."""
        out = asdict(self)
        out["psi_reveal"] = list(self.psi_reveal)
        out["allowed_schemes"] = list(self.allowed_schemes)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> NodeLimits:
        """Inverse of :meth:`to_dict`."""
        values = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        for name in ("psi_reveal", "allowed_schemes"):
            if name in values:
                values[name] = tuple(values[name])
        if "compute" in values:
            values["compute"] = ComputeSettings.from_dict(dict(values["compute"]))
        return cls(**values)


def single_operator(insecure_test_keys: bool = False) -> NodeLimits:
    """Limits for code where one person holds every party's data in one process.

    In-process estimators (notebooks) and unit tests of arithmetic act for every party at
    once: there is no peer to protect a party from, so alignment, batch and probing limits do
    not apply. Keys stay at 2048+ bits unless the caller asks for test keys by name.
    """
    return NodeLimits(
        min_key_bits=512 if insecure_test_keys else DEFAULT_KEY_BITS,
        allow_insecure_test_keys=insecure_test_keys,
        allowed_schemes=tuple(SCHEMES),
        psi_reveal=ALL_REVEAL_MODES,
        psi_max_bank_ratio=float("inf"),
        psi_alert_bank_ratio=float("inf"),
        psi_alert_hit_rate=0.0,
        min_batch_size=1,
        rows_per_cross_term=1,
        validation_max_share=1.0,
    )


@dataclass(frozen=True)
class ReleaseGrant:
    """Noise and number of releases a node granted one job for one DP mechanism.

    Fixed by the node when it reserved the job's privacy budget: ``max_releases`` releases,
    each with Gaussian noise of ``noise_multiplier`` times the release's L2 sensitivity.
    """

    mechanism: str
    noise_multiplier: float
    max_releases: int
    delta: float

    def events(self, releases: int) -> list[PrivacyEvent]:
        """The privacy events of ``releases`` releases under this grant (none for zero)."""
        if releases <= 0:
            return []
        return [
            PrivacyEvent(
                noise_multiplier=self.noise_multiplier,
                sample_rate=1.0,
                steps=int(releases),
                unit="record",
                mechanism=self.mechanism,
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ReleaseGrant:
        """Inverse of :meth:`to_dict`."""
        return cls(
            mechanism=str(raw["mechanism"]),
            noise_multiplier=float(raw["noise_multiplier"]),
            max_releases=int(raw["max_releases"]),
            delta=float(raw["delta"]),
        )


class NodeGuard(Protocol):
    """A node's policy as a protocol step sees it."""

    @property
    def limits(self) -> NodeLimits:
        """The node's limits."""

    def job_crypto(self) -> Mapping[str, Any]:
        """The ``crypto`` section of the job this node approved when it joined.

        What a peer's key must match (scheme, size): the node approved the job, not whatever
        key a peer sends later.
        """

    def grant(self, mechanism: str) -> ReleaseGrant | None:
        """The DP grant of this job for ``mechanism`` (``None``: the job asked for no DP)."""

    def record_release(self, mechanism: str) -> int:
        """Count one release under ``mechanism``; return how many were made.

        Raises
        ------
        PolicyRefusalError
            If the release would exceed the grant.
        """

    def notify(self, event: str, payload: Mapping[str, Any]) -> None:
        """Tell the node's owner (its audit log) what happened, e.g. an alignment or an alert."""

    def column_groups(self) -> Mapping[str, str]:
        """Published feature group of each column this node serves (empty: none published)."""


def count_release(grant: ReleaseGrant | None, made: int) -> int:
    """The release count after one more release under ``grant``; refuse beyond it.

    Raises
    ------
    PolicyRefusalError
        If there is no grant, or it is used up.
    """
    if grant is None:
        raise PolicyRefusalError("a DP release was asked for, but this node granted no DP release")
    if made >= grant.max_releases:
        raise PolicyRefusalError(
            f"release {made + 1} of {grant.mechanism} exceeds the {grant.max_releases} this "
            "node reserved in its privacy-budget ledger for the job; the job asked for more "
            "trees or levels than it declared"
        )
    return made + 1
