"""A party's table read a group of columns at a time and kept column by column on disk."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import features.columnar as columnar
from features.errors import DataError
from features.io import PartyTable, read_party_columns, read_party_table
from features.text_format import TextFormat

CSV = (
    "id,y,w,amount,grade,code,rate\n"
    " 007 ,1,1.0,1.5,A,10,0.1\n"
    "8,0,2.0,,B,20,0.2\n"
    "9,0,1.0,NA,,30,\n"
    "10,1,0.5,2.5,C,NULL,0.4\n"
)
OPTIONS: dict[str, Any] = {
    "id_column": "id",
    "label_column": "y",
    "weight_column": "w",
    "categorical": ("code",),
}


def _same(a: PartyTable, b: PartyTable) -> None:
    assert a.ids.tolist() == b.ids.tolist()
    assert a.digest == b.digest
    assert a.path == b.path
    for x, y in ((a.label, b.label), (a.weight, b.weight)):
        assert (x is None and y is None) or (
            x is not None and y is not None and np.array_equal(x, y)
        )
    assert dict(a.feature_kinds) == dict(b.feature_kinds)
    assert a.feature_names == b.feature_names
    pd.testing.assert_frame_equal(a.features, b.features)


def _grouped(path: Path, **options: Any) -> PartyTable:
    rows, columns = read_party_columns(path, read_cells=1, **options)
    parsed = {str(s.name): (s, k) for s, k in columns}
    frame = pd.DataFrame({n: s for n, (s, _) in parsed.items()})
    return rows.with_features(frame, {n: k for n, (_, k) in parsed.items()})


def _files(tmp_path: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    plain = tmp_path / "t.csv"
    plain.write_text(CSV, encoding="utf-8")
    zipped = tmp_path / "t.csv.gz"
    zipped.write_bytes(gzip.compress(CSV.replace(",", ";").encode("utf-8")))
    parquet = tmp_path / "t.parquet"
    pd.DataFrame(
        {"id": [1, 2, 3], "y": [0, 1, 0], "x": [0.5, None, 1.5], "s": ["a", None, "b"]},
        index=[7, 8, 9],
    ).to_parquet(parquet)
    semicolon = {**OPTIONS, "text_format": TextFormat(delimiter=";")}
    return {
        "csv": (plain, OPTIONS),
        "csv.gz": (zipped, semicolon),
        "parquet": (parquet, {"id_column": "id", "label_column": "y"}),
    }


@pytest.mark.parametrize("kind", ["csv", "csv.gz", "parquet"])
def test_a_table_read_by_groups_of_columns_is_the_table_read_at_once(
    tmp_path: Path, kind: str
) -> None:
    path, options = _files(tmp_path)[kind]
    _same(_grouped(path, **options), read_party_table(path, **options))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("id,a,b\n1,1,2\n2,3\n3,4,5\n", "line 3 has 2"),  # a short row shifts no group
        ("id,a,b\n1,1,x\n2,3,4\n3,4,5\n4,5,6\n", "'b'"),  # stray text in a later group
        ("id,a,a\n1,1,2\n", "duplicate column names"),
        ("id,a,b\n1,,2\n2,,3\n", "'a' has no values"),
    ],
)
def test_bad_files_get_the_same_error_read_by_groups(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as whole:
        read_party_table(path, id_column="id")
    with pytest.raises(DataError) as grouped:
        _grouped(path, id_column="id")
    assert fragment in str(whole.value)
    assert str(grouped.value) == str(whole.value)


def test_a_kept_table_is_the_table_and_its_features_are_mapped_read_only(
    tmp_path: Path,
) -> None:
    path, options = _files(tmp_path)["csv"]
    root = tmp_path / "store" / "columns"
    kept = columnar.load_columnar(path, root, **options)
    _same(kept, read_party_table(path, **options))
    assert kept.columns_dir is not None
    assert kept.columns_dir.parent == root
    amount = kept.features["amount"].to_numpy()
    assert amount.base is not None
    assert isinstance(amount.base, np.memmap) or isinstance(amount.base.base, np.memmap)
    with pytest.raises(ValueError, match="read-only"):
        amount[0] = 99.0
    # Opened again (another process, say) from the store: no read of the file's cells.
    again = columnar.open_columnar(kept.columns_dir)
    _same(again, kept)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(kept.columns_dir.stat().st_mode) == 0o700
    for file in kept.columns_dir.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


def test_a_kept_table_is_reused_and_a_changed_file_replaces_its_older_copy(
    tmp_path: Path,
) -> None:
    path, options = _files(tmp_path)["csv"]
    root = tmp_path / "columns"
    first = columnar.load_columnar(path, root, **options)
    assert columnar.load_columnar(path, root, **options).columns_dir == first.columns_dir
    other = tmp_path / "other.csv"
    other.write_text("id,a\n1,2\n2,3\n", encoding="utf-8")
    columnar.load_columnar(other, root, id_column="id")  # another file's entry stays
    # The platform removes enterprise 9 (say, its authorization ended): no copy keeps it.
    path.write_text("".join(line for line in CSV.splitlines(True) if not line.startswith("9,")))
    second = columnar.load_columnar(path, root, **options)
    assert second.columns_dir != first.columns_dir
    assert first.columns_dir is not None
    assert not first.columns_dir.exists()
    assert "9" not in second.ids.tolist()
    assert len([e for e in root.iterdir() if not e.name.startswith(".")]) == 2
    # Other reading options are another entry of the same file, not a clash; the next version
    # of the file removes both.
    narrow = columnar.load_columnar(path, root, **{**options, "features": ("rate", "code")})
    assert narrow.feature_names == ["rate", "code"]
    assert narrow.columns_dir != second.columns_dir
    assert second.columns_dir is not None
    assert second.columns_dir.exists()
    path.write_text(CSV)
    columnar.load_columnar(path, root, **options)
    assert narrow.columns_dir is not None
    assert not narrow.columns_dir.exists()
    assert not second.columns_dir.exists()


def test_a_bad_file_leaves_nothing_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,a,b\n1,1,2\n2,3,x\n3,4,5\n4,5,6\n", encoding="utf-8")
    root = tmp_path / "columns"
    with pytest.raises(DataError, match="'b'"):
        columnar.load_columnar(path, root, id_column="id")
    assert list(root.iterdir()) == []  # not even a temporary entry


def test_admitted_rows_are_kept_beside_their_table(tmp_path: Path) -> None:
    path, options = _files(tmp_path)["csv"]
    kept = columnar.load_columnar(path, tmp_path / "columns", **options)
    mask = np.array([True, False, True, True])
    subset = columnar.store_subset(kept, mask)
    _same(subset, kept.subset(mask))
    assert subset.columns_dir is not None
    assert subset.columns_dir.parent.parent == kept.columns_dir
    assert isinstance(subset.features["rate"].to_numpy().base, (np.memmap, np.ndarray))
    assert columnar.store_subset(kept, mask.copy()).columns_dir == subset.columns_dir
    masks = [np.array([True] * i + [False] + [True] * (3 - i)) for i in range(4)]
    for other in masks:
        columnar.store_subset(kept, other)
    kept_subsets = list((kept.columns_dir / "subsets").iterdir())
    assert len(kept_subsets) == columnar.KEPT_SUBSETS
    # A table held in memory gives its subset in memory.
    in_memory = read_party_table(path, **options)
    assert columnar.store_subset(in_memory, mask).columns_dir is None


def test_an_entry_of_another_layout_is_refused_and_rebuilt(tmp_path: Path) -> None:
    path, options = _files(tmp_path)["csv"]
    root = tmp_path / "columns"
    kept = columnar.load_columnar(path, root, **options)
    assert kept.columns_dir is not None
    meta = kept.columns_dir / "meta.json"
    described = json.loads(meta.read_text())
    meta.write_text(json.dumps({**described, "format": 0}))
    with pytest.raises(DataError, match="not a complete columnar table"):
        columnar.open_columnar(kept.columns_dir)
    os.chmod(meta, 0o600)
    _same(columnar.load_columnar(path, root, **options), kept)


_PEAK = textwrap.dedent(
    """
    import json, sys, threading, time
    from pathlib import Path

    import pyarrow.parquet  # its libraries' own memory is not the table's

    import features.columnar as columnar
    from features.io import read_party_table

    def anonymous() -> float:  # MiB of this process's own memory (not mapped file pages)
        with open("/proc/self/status") as fh:
            line = next(x for x in fh if x.startswith("RssAnon:"))
        return int(line.split()[1]) / 2**10

    peak, done = [anonymous()], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(anonymous())
            time.sleep(0.002)

    path, root, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    before = anonymous()
    sampler = threading.Thread(target=sample)
    sampler.start()
    if how == "memory":
        table = read_party_table(path, id_column="id")
    else:
        table = columnar.load_columnar(path, root, id_column="id")
    for name in table.feature_names:  # a training step reads every column once
        float(table.features[name].to_numpy().sum())
    done.set()
    sampler.join()
    peak.append(anonymous())
    print(json.dumps({"grew": max(peak) - before}))
    """
)


def test_a_kept_table_does_not_sit_in_its_process_memory(tmp_path: Path) -> None:
    """Peak anonymous memory of fresh processes reading 50,000 rows x 125 and x 500 features.

    Four times the features (143 MiB more as float64): read into memory, the process grows by
    that much more; built into the store a group of columns at a time
    (:data:`features.io.READ_CELLS`), then opened from it with every column read, by less than
    a quarter of it (measured: -13 to +19 MiB; mapped file pages are the page cache's,
    reclaimable, and not counted). What every reading costs whatever the width (libraries'
    pools, the ids) cancels out. Memory, not time: no timed assertion.
    """
    rng = np.random.default_rng(7)
    n = 50_000
    paths = {}
    for f in (125, 500):
        frame = pd.DataFrame(rng.normal(size=(n, f)), columns=[f"f{i}" for i in range(f)])
        frame.insert(0, "id", np.arange(n).astype(str))
        paths[f] = tmp_path / f"wide{f}.parquet"
        frame.to_parquet(paths[f], row_group_size=10_000)
        del frame
    more_mib = n * (500 - 125) * 8 / 2**20
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def grew(f: int, how: str, read_cells: int | None = None) -> float:
        script = _PEAK
        if read_cells is not None:
            script = f"import features.io\nfeatures.io.READ_CELLS = {read_cells}\n" + script
        out = subprocess.run(
            [sys.executable, "-c", script, str(paths[f]), str(tmp_path / "columns"), how],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        result = json.loads(out.stdout)
        return float(result["grew"])

    in_memory = {f: grew(f, "memory") for f in paths}
    built = {f: grew(f, "columns", read_cells=2_000_000) for f in paths}  # 40 columns a group
    opened = {f: grew(f, "columns") for f in paths}
    assert in_memory[500] - in_memory[125] > 0.9 * more_mib, in_memory
    assert built[500] - built[125] < 0.25 * more_mib, built
    assert opened[500] - opened[125] < 0.25 * more_mib, opened


def _job(folder: Path) -> Any:
    from federated.driver import run_job
    from federated.party import DictStore, PartyRuntime
    from federated.protocols import party_protocols
    from federated.spec import JobSpec, PartyBinding, PartySpec
    from federated.transport import InProcessTransport
    from tests.conftest import TEST_LIMITS, make_vertical

    files = dict(zip(("bank", "platform"), make_vertical(folder), strict=True))
    parties = {
        name: PartyRuntime(
            PartyBinding(name, name, path, store=folder / f"{name}-store"),  # type: ignore[arg-type]
            DictStore(),
            party_protocols(),
            limits=TEST_LIMITS,
        )
        for name, path in files.items()
    }
    spec = JobSpec(
        job_id="kept",
        name="kept",
        kind="vertical",
        parties=(PartySpec("bank", "bank", "id", "y"), PartySpec("platform", "platform", "id")),
        model={"type": "secureboost", "n_estimators": 2, "max_depth": 2, "max_bin": 8},
        crypto={"key_bits": 512, "insecure_test_keys": True},
    )
    return run_job(spec, InProcessTransport(parties))


def test_a_job_on_kept_tables_is_the_job_on_tables_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import federated.party

    federated.party._cached_table.cache_clear()
    kept = _job(tmp_path / "kept")
    federated.party._cached_table.cache_clear()
    with monkeypatch.context() as patch:
        patch.setattr(
            federated.party, "load_columnar", lambda path, _, **o: read_party_table(path, **o)
        )
        held = _job(tmp_path / "held")
    federated.party._cached_table.cache_clear()
    assert not (tmp_path / "held" / "platform-store" / "columns").exists()
    assert kept.joint.report.auc == held.joint.report.auc
    for a, b in zip(kept.joint.details["per_tree"], held.joint.details["per_tree"], strict=True):
        assert (a["test_auc"], a["leaves"]) == (b["test_auc"], b["leaves"])
    folder = tmp_path / "kept" / "platform-store" / "columns"
    entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    assert len(entries) == 1
    # The platform's binned training rows were built once, beside its table, for the job.
    assert len(list((entries[0] / "derived").glob("bins-*.npy"))) == 1
    assert json.loads((entries[0] / "meta.json").read_text())["features"][0]["kind"] in (
        "numeric",
        "categorical",
    )


def test_a_derived_matrix_is_built_once_kept_beside_its_table_and_mapped(tmp_path: Path) -> None:
    path, options = _files(tmp_path)["csv"]
    kept = columnar.load_columnar(path, tmp_path / "columns", **options)
    calls: list[int] = []

    def build(out: np.ndarray) -> None:
        calls.append(1)
        out[:] = np.arange(out.size, dtype=out.dtype).reshape(out.shape)

    first = columnar.kept_matrix(kept, "bins-a", (4, 3), np.uint8, build)
    second = columnar.kept_matrix(kept, "bins-a", (4, 3), np.uint8, build)
    assert calls == [1]  # the second call (another process, say) maps the file
    assert np.array_equal(first, second)
    assert second.tolist() == np.arange(12).reshape(4, 3).tolist()
    assert not second.flags.writeable
    assert kept.columns_dir is not None
    file = kept.columns_dir / "derived" / "bins-a.npy"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    with pytest.raises(DataError, match="remove it"):
        columnar.kept_matrix(kept, "bins-a", (5, 3), np.uint8, build)
    for i in range(columnar.KEPT_DERIVED + 1):
        columnar.kept_matrix(kept, f"bins-{i}", (2, 2), np.uint8, build)
    assert len(list(file.parent.glob("*.npy"))) == columnar.KEPT_DERIVED
    # A failed build leaves no file.
    with pytest.raises(RuntimeError):
        columnar.kept_matrix(kept, "bins-z", (2, 2), np.uint8, _fail)
    assert not (file.parent / "bins-z.npy").exists()
    assert [f for f in file.parent.iterdir() if f.name.endswith(".tmp")] == []
    # A table held in memory gets its matrix in memory.
    held = columnar.kept_matrix(read_party_table(path, **options), "x", (2, 2), np.uint8, build)
    assert held.flags.writeable


def _fail(out: np.ndarray) -> None:
    raise RuntimeError("interrupted")


def test_a_refused_preflight_removes_only_what_it_kept(tmp_path: Path) -> None:
    from lab.job import _undo_kept

    path, options = _files(tmp_path)["csv"]
    old_store, new_store = tmp_path / "home" / "old", tmp_path / "fresh" / "parties" / "new"
    earlier = columnar.load_columnar(path, old_store / "columns", **options)
    undo = _undo_kept([old_store, new_store])
    columnar.load_columnar(path, old_store / "columns", **{**options, "categorical": ()})
    columnar.load_columnar(path, new_store / "columns", **options)
    undo()
    assert earlier.columns_dir is not None
    kept = [e.name for e in (old_store / "columns").iterdir() if not e.name.startswith(".")]
    assert kept == [earlier.columns_dir.name]
    assert not (tmp_path / "fresh").exists()  # the folders it created, from the outermost


def test_a_file_changed_while_it_is_kept_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, options = _files(tmp_path)["csv"]
    real = columnar.read_party_columns

    def read_then_edit(*args: Any, **kwargs: Any) -> Any:
        rows, columns = real(*args, **kwargs)
        path.write_text(CSV.replace("1.5", "9.5"), encoding="utf-8")  # the platform re-exports
        return rows, columns

    monkeypatch.setattr(columnar, "read_party_columns", read_then_edit)
    root = tmp_path / "columns"
    with pytest.raises(DataError, match="changed while it was read"):
        columnar.load_columnar(path, root, **options)
    assert list(root.iterdir()) == []


def test_a_file_is_hashed_once_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node starting a process per message opens its entry without hashing the file again."""
    path, options = _files(tmp_path)["csv"]
    root = tmp_path / "columns"
    hashed: list[Path] = []
    real = columnar.file_digest

    def counting(p: Path) -> str:
        hashed.append(p)
        return real(p)

    monkeypatch.setattr(columnar, "file_digest", counting)
    first = columnar.load_columnar(path, root, **options)
    assert len(hashed) == 1  # the entry's key (the reader hashes once more, for its own check)
    hashed.clear()
    assert columnar.load_columnar(path, root, **options).digest == first.digest
    assert hashed == []
    os.utime(path, ns=(1, 1))  # another version, as far as anyone can tell: hashed again
    assert columnar.load_columnar(path, root, **options).digest == first.digest
    assert hashed == [path]
    notes = list((root / ".digests").iterdir())
    assert len(notes) == 1  # the older version's note is forgotten
    assert stat.S_IMODE(notes[0].stat().st_mode) == 0o600
