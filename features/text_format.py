"""How a party's CSV file is written, and the checks that name a wrong guess.

A party's CSV may come from any spreadsheet or database export: ``;``-delimited with decimal
commas (European locales), latin-1 or cp1252 encoded (older Windows exports), compressed.
:class:`TextFormat` is how the party says so (the ``delimiter``, ``encoding``, ``decimal`` and
``na_values`` keys of its section in the experiment config). Every way of getting it wrong
ends in one :class:`~features.errors.DataError` naming the file, the line or byte, and the
setting that fixes it, instead of a codec error or a "column not found".

Compression is read from the file's first bytes, not its name: gzip and bz2 files are read
transparently (the standard library decompresses them as a stream); zip archives (an Excel
``.xlsx`` workbook is one), xz and zstd files and Parquet files with a ``.csv`` name are
refused with what to do.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, cast

from features.errors import DataError

Compression = Literal["gzip", "bz2"]

#: Delimiters a file is checked for when its header does not split on the configured one.
CANDIDATE_DELIMITERS = (";", "\t", "|", ",")

#: Magic bytes of formats read transparently.
_READABLE: tuple[tuple[bytes, Compression], ...] = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"))

#: Magic bytes of formats refused, with what to do instead.
_REFUSED: tuple[tuple[bytes, str], ...] = (
    (
        b"PK\x03\x04",
        "is a zip archive (an Excel .xlsx workbook is one too); unzip it, or export the sheet "
        "as CSV, and point 'data' at the CSV file",
    ),
    (b"\xfd7zXZ\x00", "is xz-compressed; decompress it (xz -d) or recompress it with gzip"),
    (
        b"\x28\xb5\x2f\xfd",
        "is zstd-compressed; decompress it (zstd -d) or recompress it with gzip",
    ),
    (b"PAR1", "is a Parquet file; rename it to end in .parquet"),
)

#: Byte-order marks of UTF-16 and UTF-32 text (spreadsheets' "Unicode text" export).
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class TextFormat:
    """How a party's CSV file is written (ignored for Parquet, except ``na_values``).

    Attributes
    ----------
    delimiter : str
        The one character between fields: ``,`` (default), ``;``, a tab, ``|`` ...
    encoding : str
        The file's text encoding (any Python codec name): ``utf-8`` (default; a leading
        byte-order mark is dropped), ``latin-1``, ``cp1252`` ...
    decimal : {".", ","}
        The decimal mark of numbers. With ``,``, ``12,5`` is 12.5 and a number holding ``.``
        is refused (``1.500`` could be 1.5 or 1500).
    na_values : tuple of str
        Cell values read as missing in feature and label columns, besides the built-in
        spellings (:data:`features.io.MISSING_TOKENS`); compared after stripping whitespace.
    """

    delimiter: str = ","
    encoding: str = "utf-8"
    decimal: Literal[".", ","] = "."
    na_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = delimiter_problem(self.delimiter) or encoding_problem(self.encoding)
        if problem:
            raise ValueError(problem)
        if self.decimal not in (".", ","):
            raise ValueError(f"decimal must be '.' or ',', got {self.decimal!r}")

    @property
    def python_encoding(self) -> str:
        """The codec to read with (``utf-8-sig`` for UTF-8, so a byte-order mark is dropped)."""
        return "utf-8-sig" if codecs.lookup(self.encoding).name == "utf-8" else self.encoding

    def to_dict(self) -> dict[str, object]:
        """Plain form (the job spec's JSON)."""
        return {
            "delimiter": self.delimiter,
            "encoding": self.encoding,
            "decimal": self.decimal,
            "na_values": list(self.na_values),
        }


def delimiter_problem(value: str) -> str | None:
    """Why ``value`` cannot be a CSV delimiter, or ``None`` if it can."""
    if len(value) != 1:
        hint = ' (for a tab write delimiter: "\\t" in double quotes)' if value == "\\t" else ""
        return f"a delimiter is one character, got {value!r}{hint}"
    if value in '"\r\n' or value.isalnum() or value in ".-":
        return f"{value!r} cannot be a delimiter; use ',', ';', '|' or a tab"
    return None


def encoding_problem(value: str) -> str | None:
    """Why ``value`` is not a text encoding Python knows, or ``None`` if it is."""
    try:
        info = codecs.lookup(value)
    except LookupError:
        return f"unknown encoding {value!r}; use e.g. utf-8, latin-1 or cp1252"
    if not info._is_text_encoding:  # e.g. "base64", "zip": bytes-to-bytes codecs
        return f"{value!r} is not a text encoding; use e.g. utf-8, latin-1 or cp1252"
    return None


#: The format every party's file has unless its config says otherwise (the one default).
DEFAULT_FORMAT = TextFormat()


def yaml_delimiter(delimiter: str) -> str:
    """``delimiter: ...`` as one writes it in the YAML config."""
    return 'delimiter: "\\t"' if delimiter == "\t" else f"delimiter: '{delimiter}'"


def compression_of(path: Path) -> Compression | None:
    """The compression of a CSV file, from its first bytes (``None``: plain text).

    Raises
    ------
    DataError
        If the file is a zip archive, xz or zstd compressed, or Parquet: formats not read as
        CSV, with what to do instead.
    """
    with path.open("rb") as fh:
        head = fh.read(8)
    for magic, kind in _READABLE:
        if head.startswith(magic):
            return kind
    for magic, fix in _REFUSED:
        if head.startswith(magic):
            raise DataError(f"{path}: the file {fix}")
    return None


@contextmanager
def open_binary(path: Path) -> Iterator[IO[bytes]]:
    """Open a CSV file's bytes, decompressed if it is gzip or bz2 (see :func:`compression_of`)."""
    with _open_bytes(path) as fh:
        yield fh


def _open_bytes(path: Path) -> IO[bytes]:
    kind = compression_of(path)
    if kind == "gzip":
        return cast(IO[bytes], gzip.open(path, "rb"))
    if kind == "bz2":
        return cast(IO[bytes], bz2.open(path, "rb"))
    return path.open("rb")


@contextmanager
def open_text(path: Path, text_format: TextFormat) -> Iterator[IO[str]]:
    """Open a CSV file as text in its encoding, decompressed if needed (``newline=""`` for csv).

    Decoding errors surface while reading; pass them to :func:`encoding_error`.
    """
    with open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding=text_format.python_encoding, newline="")
        try:
            yield text
        finally:
            text.detach()


def read_header_fields(path: Path, text_format: TextFormat) -> list[str]:
    """The header row of a CSV file, split on the configured delimiter.

    Raises
    ------
    DataError
        If the file cannot be decoded (:func:`encoding_error`) or its header looks split by
        another delimiter (:func:`check_delimiter`).
    """
    try:
        with open_text(path, text_format) as fh:
            header = next(csv.reader(fh, delimiter=text_format.delimiter), [])
    except UnicodeDecodeError as exc:
        raise encoding_error(path, text_format) from exc
    except csv.Error as exc:
        raise DataError(f"{path}: cannot read the header ({exc})") from exc
    check_delimiter(path, header, text_format)
    return header


def check_delimiter(path: Path, header: list[str], text_format: TextFormat) -> None:
    """Refuse a header that is one field under the configured delimiter but several under another.

    Raises
    ------
    DataError
        ``this file looks ';'-delimited ...; set delimiter: ';'``.
    """
    if len(header) != 1:
        return
    line = header[0]
    splits = {d: len(line.split(d)) for d in CANDIDATE_DELIMITERS if d != text_format.delimiter}
    best = max(splits, key=lambda d: splits[d])  # ties: the first candidate wins
    if splits[best] < 2:
        return
    shown = "tab" if best == "\t" else repr(best)
    raise DataError(
        f"{path}: the header is one column with the delimiter "
        f"{'tab' if text_format.delimiter == chr(9) else repr(text_format.delimiter)}, but this "
        f"file looks {shown}-delimited ({splits[best]} columns); set "
        f"{yaml_delimiter(best)} in this party's section of the experiment config"
    )


def encoding_error(path: Path, text_format: TextFormat) -> DataError:
    """A :class:`DataError` naming the first line and byte the file's encoding cannot decode.

    Call it when decoding failed; it reads the file again line by line to find the place.
    """
    with open_binary(path) as fh:
        start = fh.read(4)
    for bom, name in _WIDE_BOMS:
        if start.startswith(bom):
            return DataError(
                f"{path}: the file is {name.upper()} text (it starts with a {name} byte-order "
                f"mark), not {text_format.encoding}; set encoding: {name} in this party's "
                "section of the experiment config, or save the file as UTF-8"
            )
    decoder = codecs.getincrementaldecoder(text_format.python_encoding)()
    with open_binary(path) as fh:
        for number, line in enumerate(fh, start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as exc:
                byte = line[exc.start]
                latin = line.decode("cp1252", errors="replace").strip()
                guess = "latin-1 or cp1252 (a Windows or older spreadsheet export)"
                return DataError(
                    f"{path}: line {number}, byte {exc.start + 1} (0x{byte:02x}) is not valid "
                    f"{text_format.encoding}; the file looks {guess}, where that line reads "
                    f"{_clip(latin)!r}; set encoding: latin-1 (or cp1252) in this party's "
                    "section of the experiment config, or re-encode the file as UTF-8 (iconv "
                    "-f cp1252 -t utf-8)",
                    redacted=f"{path}: line {number}, byte {exc.start + 1} is not valid "
                    f"{text_format.encoding}; set the party's 'encoding' (e.g. latin-1) or "
                    "re-encode the file as UTF-8",
                )
    return DataError(
        f"{path}: the file is not valid {text_format.encoding} text; set the party's "
        "'encoding' (e.g. latin-1) or re-encode the file as UTF-8"
    )


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
