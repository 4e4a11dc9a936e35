"""Download public datasets from their official sources, verify them, and unpack them safely.

`download(name_or_source, data_dir)` fetches one dataset into ``<data_dir>/<folder>`` and returns
that folder:

* A dataset whose required files are already there is not downloaded again.
* The file is streamed to ``<data_dir>/<file>.part``. An interrupted download resumes: the next
  call asks the server for the missing bytes (``Range: bytes=N-``) and appends them when it answers
  206; it starts over when the server answers 200.
* The sha256 is checked before anything is unpacked. On a mismatch the partial file is deleted and
  an `InputError` names the expected and the actual hash. Sources without a pinned hash are refused
  unless the caller passes ``allow_unpinned=True`` (CLI: ``--insecure-skip-checksum``).
* Archives are unpacked into a temporary folder inside ``data_dir`` that is renamed into place only
  once everything is there. A member whose path would land outside the target (absolute paths,
  ``..``, symbolic or hard links that point outside) or that is a device file is refused with an
  `InputError`, and nothing of the refused archive is left behind.

Tests pass their own `Source` (for instance one that points at a loopback HTTP server) instead of a
registered name.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from recalign import __version__
from recalign.data.paths import resolve_data_dir
from recalign.errors import InputError, RecalignError

__all__ = [
    "SOURCES",
    "DownloadError",
    "describe_sources",
    "DownloadUnreachable",
    "Source",
    "download",
    "get_source",
    "is_complete",
    "safe_extract",
]

log = logging.getLogger(__name__)

ArchiveKind = Literal["zip", "tar.gz", "none"]
_ARCHIVE_KINDS = ("zip", "tar.gz", "none")
_CHUNK = 1 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_USER_AGENT = f"recalign/{__version__} (dataset downloader; python urllib)"


class DownloadError(RecalignError):
    """The network or the server failed (exit code 1); a partial download is kept for resuming."""


class DownloadUnreachable(DownloadError):
    """The server could not be reached at all (no network, DNS, proxy, firewall): the user's
    environment, not a bug, so exit code 2. The message names the URL and where to put the file
    by hand."""

    exit_code = 2


@dataclass(frozen=True)
class Source:
    """One downloadable dataset.

    Attributes:
        name: the name users type (``recalign data download NAME``).
        url: where the file is fetched from (http or https).
        sha256: the pinned lowercase hex sha256 of the downloaded file, or ``None`` when no
            published value is known ("not pinned": refused unless explicitly allowed).
        folder: the folder name the dataset lands in, inside the data folder.
        required: files (relative to ``folder``) that must exist for the dataset to count as
            present.
        archive: ``"zip"``, ``"tar.gz"``, or ``"none"`` (a single plain file, kept as is).
        size: the size in bytes, if known (progress bar; a pinned download that grows past it is
            stopped early).
        archive_root: the top-level folder inside the archive whose contents become ``folder``
            (``None``: the archive's contents go straight into ``folder``).
        filename: the local name of the downloaded file (default: the last part of the URL path).
        note: where the checksum came from, terms of use, or other remarks.
    """

    name: str
    url: str
    sha256: str | None
    folder: str
    required: tuple[str, ...]
    archive: ArchiveKind = "zip"
    size: int | None = None
    archive_root: str | None = None
    filename: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.archive not in _ARCHIVE_KINDS:
            raise ValueError(f"Source {self.name!r}: archive must be one of {_ARCHIVE_KINDS}")
        if self.sha256 is not None and not _SHA256_RE.match(self.sha256):
            raise ValueError(f"Source {self.name!r}: sha256 must be 64 lowercase hex digits")
        if not _is_plain_name(self.folder):
            raise ValueError(f"Source {self.name!r}: folder must be a plain folder name")
        if not _is_plain_name(self.file_name):
            raise ValueError(f"Source {self.name!r}: cannot derive a file name from the URL")
        if not self.required:
            raise ValueError(f"Source {self.name!r}: list at least one required file")
        for rel in self.required:
            p = PurePosixPath(rel)
            if p.is_absolute() or ".." in p.parts or not p.parts:
                raise ValueError(f"Source {self.name!r}: bad required path {rel!r}")
        if self.archive == "none" and self.file_name not in self.required:
            raise ValueError(f"Source {self.name!r}: a plain file must be among `required`")

    @property
    def pinned(self) -> bool:
        """Whether the download is checked against a known sha256."""
        return self.sha256 is not None

    @property
    def file_name(self) -> str:
        """The local name of the downloaded file."""
        if self.filename:
            return self.filename
        return PurePosixPath(urllib.parse.urlsplit(self.url).path).name


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


# --------------------------------------------------------------------------------------------
# The registry.
#
# A sha256 is pinned only where a published value for that exact URL was found; each entry says
# where. Everything else is None ("not pinned"). GroupLens itself publishes only MD5 sums
# (<name>.zip.md5), which are not used here.
# --------------------------------------------------------------------------------------------

_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
# TensorFlow Datasets, tensorflow_datasets/url_checksums/movielens.txt (tensorflow/datasets,
# commit 1c076ac3c19c8ea83e1d1a75e0623c9a699e0d7c): "URL <tab> size <tab> sha256" for
# ml-100k, ml-1m, ml-20m, ml-25m and ml-latest-small.
_TFDS = "sha256 and size: TensorFlow Datasets url_checksums/movielens.txt"
_MOVIELENS_TERMS = (
    "GroupLens terms: research use only, no redistribution, no commercial use without "
    "permission; cite Harper & Konstan 2015 (doi:10.1145/2827872)."
)
_ML_CSV = ("ratings.csv", "movies.csv", "tags.csv", "links.csv")


def _movielens(
    name: str,
    sha256: str | None,
    size: int | None,
    required: tuple[str, ...],
    *,
    archive_root: str | None = None,
    origin: str,
) -> Source:
    return Source(
        name=name,
        url=f"{_GROUPLENS}{name}.zip",
        sha256=sha256,
        folder=name,
        required=required,
        archive="zip",
        size=size,
        archive_root=archive_root or name,
        note=f"{origin}. {_MOVIELENS_TERMS}",
    )


_OBD_FILES = tuple(
    f"{policy}/{campaign}/{fname}"
    for policy in ("random", "bts")
    for campaign in ("all", "men", "women")
    for fname in (f"{campaign}.csv", "item_context.csv")
)

_SOURCE_LIST: tuple[Source, ...] = (
    _movielens(
        "ml-100k",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        4924029,
        ("u.data", "u.item", "u.user"),
        origin=_TFDS,
    ),
    _movielens(
        "ml-1m",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        5917549,
        ("ratings.dat", "movies.dat", "users.dat"),
        origin=_TFDS,
    ),
    # No published sha256 found (only GroupLens' MD5). The zip unpacks to "ml-10M100K".
    _movielens(
        "ml-10m",
        None,
        None,
        ("ratings.dat", "movies.dat", "tags.dat"),
        archive_root="ml-10M100K",
        origin="not pinned: no published sha256 found",
    ),
    _movielens(
        "ml-20m",
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        198702078,
        _ML_CSV,
        origin=_TFDS,
    ),
    _movielens(
        "ml-25m",
        "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        261978986,
        _ML_CSV,
        origin=_TFDS,
    ),
    # No published sha256 found.
    _movielens(
        "ml-32m",
        None,
        None,
        _ML_CSV,
        origin="not pinned: no published sha256 found",
    ),
    # The September 2018 release (GroupLens calls "latest-small" a development set that may
    # change; if it ever does, the checksum check will say so).
    _movielens(
        "ml-latest-small",
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        978202,
        _ML_CSV,
        origin=_TFDS,
    ),
    # Regenerated by GroupLens from time to time, so it cannot be pinned.
    _movielens(
        "ml-latest",
        None,
        None,
        _ML_CSV,
        origin="not pinned: GroupLens regenerates this file over time",
    ),
    Source(
        name="obd",
        url="https://research.zozo.com/data_release/open_bandit_dataset.zip",
        # ZOZO publishes no checksum. This value is third-party: it is published together with
        # this URL and the size 412,931,917 bytes in the data section of the README of a public
        # research package ("dsswm", found through a GitHub code index), and the same value is
        # pinned as the archive hash (ARCHIVE_SHA256 / ZIP_SHA256) in the code of two unrelated
        # public off-policy-evaluation projects. Another project's HEAD request on this URL
        # recorded Content-Length 412931917.
        sha256="e8ec18196582a5937381a1776382ca940689b90a18d2dcd1fb635be6df614d78",
        size=412931917,
        folder="obd",
        required=_OBD_FILES,
        archive="zip",
        archive_root="open_bandit_dataset",
        note=(
            "Open Bandit Dataset (full, about 26M impressions; 400 MB download, about 11 GB "
            "unpacked), ZOZO Research, CC BY 4.0; cite Saito et al., NeurIPS 2021 Datasets and "
            "Benchmarks (arXiv:2008.07146). sha256: third-party published value (see source)."
        ),
    ),
    Source(
        name="amazon-books-2018",
        url=(
            "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/categoryFilesSmall/"
            "Books.csv"
        ),
        # Not pinned: only an MD5 was found published. The size is the one a third-party
        # downloader (sisinflab/DataRec) passes for this URL; it only sizes the progress bar.
        sha256=None,
        size=2140933459,
        folder="amazon-books-2018",
        required=("Books.csv",),
        archive="none",
        note=(
            "Amazon Review Data (2018), Books, ratings only (item,user,rating,timestamp; no "
            "header), Ni, Li & McAuley, EMNLP 2019. Not pinned: no published sha256 found."
        ),
    ),
)

SOURCES: dict[str, Source] = {s.name: s for s in _SOURCE_LIST}


def _size_text(size: int | None) -> str:
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError  # pragma: no cover


def describe_sources() -> str:
    """One line per downloadable dataset: name, download size, whether its sha256 is pinned, and
    the folder it lands in (for `recalign data download --help`)."""
    width = max(len(n) for n in SOURCES)
    lines = ["datasets (download size; sha256 pinned or not; folder inside DATA_DIR):"]
    for s in SOURCES.values():
        pin = "sha256 pinned" if s.pinned else "not pinned (needs --insecure-skip-checksum)"
        lines.append(f"  {s.name:<{width}}  {_size_text(s.size):>12}  {pin:<44}  {s.folder}/")
    lines.append("Without network: fetch the file elsewhere (the error names its URL), put it in DATA_DIR\n"
                 "under its own name (e.g. ml-100k.zip) and run the same command again; or unpack it\n"
                 "into DATA_DIR/<folder>/.")
    return "\n".join(lines)


def get_source(name_or_source: str | Source) -> Source:
    """The registered `Source` of that name (or the `Source` itself); `InputError` if unknown."""
    if isinstance(name_or_source, Source):
        return name_or_source
    key = str(name_or_source).strip().lower()
    if key in SOURCES:
        return SOURCES[key]
    raise InputError(
        f"unknown dataset {str(name_or_source)!r}; the datasets that can be downloaded are: "
        f"{', '.join(SOURCES)}"
    )


def is_complete(folder: str | Path, source: str | Source) -> bool:
    """Whether ``folder`` holds every file the source requires."""
    src = get_source(source)
    root = Path(folder)
    return root.is_dir() and all((root / rel).is_file() for rel in src.required)


# --------------------------------------------------------------------------------------------
# download()
# --------------------------------------------------------------------------------------------


def download(
    name_or_source: str | Source,
    data_dir: str | Path | None = None,
    *,
    allow_unpinned: bool = False,
    progress: bool = True,
    timeout: float = 60,
    keep_archive: bool = False,
) -> Path:
    """Fetch, verify and unpack one dataset; return its folder, ``<data_dir>/<source.folder>``.

    Args:
        name_or_source: a key of `SOURCES` (``"ml-1m"``) or a `Source`.
        data_dir: the data folder (``None``: ``$RECALIGN_DATA``, else the per-user cache).
        allow_unpinned: download a source that has no pinned sha256 anyway (its hash is logged).
        progress: show a progress bar on stderr.
        timeout: seconds to wait on the network for each connect and each read.
        keep_archive: keep the downloaded zip or tar.gz next to the unpacked folder (a plain
            file is moved into the folder).

    Raises:
        InputError: unknown name; unpinned source not allowed; checksum mismatch; an archive that
            tries to write outside its folder, holds device files or lacks the required files;
            a folder in the way.
        DownloadError: the network or the server failed (rerun to resume); its subclass
            `DownloadUnreachable` (exit code 2) when the server cannot be reached at all, with
            the URL and where to put the file by hand.
    """
    source = get_source(name_or_source)
    root = resolve_data_dir(data_dir)
    final = root / source.folder
    if is_complete(final, source):
        return final
    if final.exists() or final.is_symlink():
        missing = [rel for rel in source.required if not (final / rel).is_file()]
        raise InputError(
            f"this folder exists but is not a complete {source.name} dataset (missing: "
            f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); move it away or "
            "delete it, then run the download again",
            path=final,
        )
    if not source.pinned and not allow_unpinned:
        raise InputError(
            f"refusing to download {source.name} from {source.url}: recalign has no pinned "
            "sha256 for this file, so it cannot check that what arrives is the official file. "
            "To download it anyway, pass --insecure-skip-checksum (allow_unpinned=True in "
            "Python); the sha256 of what was downloaded is then logged."
        )
    _check_url(source)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / source.file_name
    if not _reuse_archive(source, archive):
        _fetch(source, archive, progress=progress, timeout=timeout)
    try:
        _install(source, archive, root, final)
    except InputError:
        # A refused or incomplete archive is not kept: nothing of it is left behind.
        archive.unlink(missing_ok=True)
        raise
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return final


def _check_url(source: Source) -> None:
    scheme = urllib.parse.urlsplit(source.url).scheme.lower()
    if scheme not in ("http", "https"):
        raise InputError(
            f"{source.name}: only http and https URLs are downloaded, not {source.url!r}"
        )


def _reuse_archive(source: Source, archive: Path) -> bool:
    """Whether a complete archive from an earlier run can be used instead of downloading."""
    if not archive.is_file():
        return False
    if source.sha256 is None:
        log.warning(
            "using the existing %s (not verified: %s has no pinned sha256; its sha256 is %s)",
            archive,
            source.name,
            _sha256_file(archive),
        )
        return True
    if _sha256_file(archive) == source.sha256:
        return True
    log.warning("%s does not match the pinned sha256; downloading it again", archive)
    archive.unlink()
    return False


def _fetch(source: Source, dest: Path, *, progress: bool, timeout: float) -> None:
    """Stream ``source.url`` to ``dest`` via ``dest.part`` (resuming it), verify, rename."""
    part = dest.with_name(dest.name + ".part")
    for _attempt in range(3):
        digest = _fetch_once(source, part, progress=progress, timeout=timeout)
        if digest is not None:
            break
    else:
        raise DownloadError(f"could not download {source.name} from {source.url}: no usable reply")
    _check_digest(source, part, digest)
    os.replace(part, dest)


def _fetch_once(source: Source, part: Path, *, progress: bool, timeout: float) -> str | None:
    """One request for what ``part`` lacks, appended to it (or written anew on a full reply).

    Returns the sha256 of the whole file in ``part``, or None when the reply could not be used
    and the partial file was deleted (ask again, from the start)."""
    offset = _resume_offset(source, part)
    response = _open(source, part, offset, timeout)
    if response is None:  # range not satisfiable: the partial file may already be whole
        return _digest_if_whole(source, part)
    with response:
        start = _start_writing(source, response, part, offset)
        if start is None:
            return None
        offset, mode, hasher = start
        length = _int_or_none(response.headers.get("Content-Length"))
        total = (
            source.size
            if source.size is not None
            else (offset + length if length is not None else None)
        )
        received = _stream(source, response, part, mode, hasher, offset, total, progress)
    if length is not None and received != length:
        raise DownloadError(
            f"the connection closed early while downloading {source.name} ({received} of "
            f"{length} bytes); run the download again to resume from {part}"
        )
    return hasher.hexdigest()


def _resume_offset(source: Source, part: Path) -> int:
    """The number of bytes already in ``part`` (0 if none); a partial file larger than the
    source's known size is deleted (0)."""
    offset = part.stat().st_size if part.is_file() else 0
    if source.size is not None and offset > source.size:
        part.unlink()
        offset = 0
    return offset


def _open(
    source: Source, part: Path, offset: int, timeout: float
) -> http.client.HTTPResponse | None:
    """Request ``source.url`` from byte ``offset`` on (the whole file if 0).

    Returns the open response, or None when the server answers a range request with HTTP 416
    (range not satisfiable). Any other failure is a `DownloadError`."""
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(source.url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # scheme checked by _check_url
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            return None
        raise DownloadError(
            f"downloading {source.name} from {source.url} failed: HTTP {exc.code} {exc.reason}"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise DownloadUnreachable(unreachable_message(source, part, offset, getattr(exc, "reason", exc))) from None


def unreachable_message(source: Source, part: Path, offset: int, reason: object) -> str:
    """Why a download could not start and how to install the dataset by hand."""
    root = part.parent
    archive = root / source.file_name
    final = root / source.folder
    files = ", ".join(str(final / rel) for rel in source.required[:3]) + (", ..." if len(source.required) > 3 else "")
    unpack = (f" Or put it at {final / source.file_name} yourself." if source.archive == "none" else
              f" Or unpack it yourself so that {files} exist"
              + (f" (the archive's top folder {source.archive_root} renamed to {source.folder})"
                 if source.archive_root and source.archive_root != source.folder else "") + ".")
    resume = f" The partial download {part} is kept and will be resumed." if offset else ""
    return (f"could not reach {source.url} to download {source.name} ({reason}): this machine seems to have no "
            f"network access to that server. Check the network or proxy and run the download again.{resume} "
            f"To install it by hand, fetch {source.url} on a machine that has access, put the file at {archive} "
            f"and run `recalign data download {source.name} --data-dir {root}"
            + ("` again: it checks the file against the pinned sha256" if source.pinned else
               " --insecure-skip-checksum` again (no sha256 is pinned for this file): it")
            + (" moves it into place." if source.archive == "none" else " unpacks it.")
            + unpack)


def _digest_if_whole(source: Source, part: Path) -> str | None:
    """The pinned sha256 if ``part`` already is the whole pinned file; otherwise ``part`` is
    deleted and None returned (download again from the start)."""
    if source.sha256 is not None and _sha256_file(part) == source.sha256:
        return source.sha256
    part.unlink()
    return None


def _start_writing(
    source: Source, response: http.client.HTTPResponse, part: Path, offset: int
) -> tuple[int, str, hashlib._Hash] | None:
    """How to write the body of ``response`` into ``part``: ``(offset, file mode, hasher)``.

    A 206 reply to a range request is appended (the hasher already holds the bytes kept); a
    200 reply replaces the partial file (offset 0). Returns None, deleting ``part``, when a 206
    reply covers some other range than the one asked for; any other status is a
    `DownloadError`."""
    status = response.status
    if status == 206 and offset:
        if _content_range_start(response.headers.get("Content-Range")) != offset:
            part.unlink()  # the server sent some other range: start over
            return None
        return offset, "ab", _sha256_of(part)
    if status == 200:
        return 0, "wb", hashlib.sha256()
    raise DownloadError(
        f"downloading {source.name} from {source.url}: unexpected HTTP status {status}"
    )


def _check_digest(source: Source, part: Path, digest: str) -> None:
    """Compare the sha256 of the download with the pinned one (a mismatch deletes ``part`` and
    is an `InputError`), or log it when the source has none."""
    if source.sha256 is not None:
        if digest != source.sha256:
            part.unlink(missing_ok=True)
            raise InputError(
                f"sha256 mismatch for {source.name} downloaded from {source.url}: expected "
                f"{source.sha256}, got {digest}. The download was deleted. The server may have "
                "changed the file, or the transfer was corrupted or tampered with; run the "
                "download again, and report it if the mismatch persists."
            )
    else:
        log.warning(
            "%s was downloaded without a checksum check (not pinned); its sha256 is %s",
            source.name,
            digest,
        )


def _stream(
    source: Source,
    response: BinaryIO,
    part: Path,
    mode: str,
    hasher: hashlib._Hash,
    offset: int,
    total: int | None,
    progress: bool,
) -> int:
    from tqdm import tqdm

    received = 0
    limit = source.size if source.sha256 is not None else None
    with (
        open(part, mode) as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=source.name,
            file=sys.stderr,
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:  # timeouts, resets
                out.flush()
                raise DownloadError(
                    f"the download of {source.name} from {source.url} broke off ({exc!r}); run "
                    f"it again to resume from {part}"
                ) from None
            if not chunk:
                break
            out.write(chunk)
            hasher.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
            if limit is not None and offset + received > limit:
                break
        out.flush()
        os.fsync(out.fileno())
    if limit is not None and offset + received > limit:
        part.unlink(missing_ok=True)
        raise InputError(
            f"{source.url} sent more than the expected {limit} bytes for {source.name}; the "
            "download was deleted (the server's file is not the pinned one)"
        )
    return received


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", value or "")
    return int(m.group(1)) if m else None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _sha256_of(path: Path) -> hashlib._Hash:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h


def _sha256_file(path: Path) -> str:
    return _sha256_of(path).hexdigest()


def _install(source: Source, archive: Path, root: Path, final: Path) -> None:
    """Unpack ``archive`` into a temporary folder in ``root`` and rename it to ``final``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{source.folder}.", suffix=".tmp", dir=root))
    try:
        if source.archive == "none":
            os.replace(archive, tmp / source.file_name)  # the file is the dataset: move it
            content = tmp
        else:
            safe_extract(archive, tmp, source.archive)
            content = tmp / source.archive_root if source.archive_root else tmp
            if content.is_symlink() or not content.is_dir():
                raise InputError(
                    f"the archive has no top-level folder {source.archive_root!r}, so it is not "
                    f"the expected {source.name} archive",
                    path=archive,
                )
            _check_links_within(content, archive)
        missing = [rel for rel in source.required if not (content / rel).is_file()]
        if missing:
            raise InputError(
                f"the archive lacks files the {source.name} dataset needs: "
                f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}",
                path=archive,
            )
        try:
            os.rename(content, final)
        except OSError:
            if not is_complete(final, source):  # else another process finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------------------------


def safe_extract(archive: str | Path, dest: str | Path, kind: ArchiveKind) -> None:
    """Unpack a zip or tar.gz ``archive`` into the existing folder ``dest``.

    Refuses (`InputError`) members with absolute paths or ``..`` components, members whose
    resolved path lands outside ``dest`` (also through symbolic links unpacked earlier), symbolic
    and hard links that point outside ``dest``, and device files, FIFOs and other special members.
    On refusal, ``dest`` may hold some of the archive: unpack into a fresh temporary folder and
    delete it on error (as `download` does). Hard links are unpacked as copies; no file modes or
    owners are taken from the archive.
    """
    archive = Path(archive)
    root = os.path.realpath(dest)
    if not os.path.isdir(root):
        raise NotADirectoryError(root)
    if kind == "zip":
        _extract_zip(archive, root)
    elif kind == "tar.gz":
        _extract_tar(archive, root)
    else:
        raise ValueError(f"not an archive kind: {kind!r}")


def _refuse(archive: Path, member: str, why: str) -> InputError:
    return InputError(f"refusing to unpack member {member!r}: {why}", path=archive)


def _member_parts(archive: Path, name: str) -> list[str]:
    """The path components of an archive member name, after the lexical checks."""
    if "\x00" in name:
        raise _refuse(archive, name, "the name contains a NUL byte")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise _refuse(archive, name, "it has an absolute path")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, name, "its path contains '..'")
    return parts


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _target(archive: Path, root: str, name: str) -> str | None:
    """Where a member goes (``None`` for the root itself), after every containment check."""
    parts = _member_parts(archive, name)
    if not parts:
        return None
    target = os.path.join(root, *parts)
    parent = os.path.realpath(os.path.dirname(target))
    if not _within(root, parent):
        raise _refuse(archive, name, "it would be written outside the target folder")
    return os.path.join(parent, parts[-1])


def _prepare_parent(archive: Path, root: str, name: str, target: str) -> None:
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    if not _within(root, os.path.realpath(parent)):
        raise _refuse(archive, name, "it would be written outside the target folder")
    if os.path.islink(target) or os.path.isfile(target):
        os.unlink(target)  # never write through an existing link
    elif os.path.lexists(target):
        raise _refuse(archive, name, "it would replace a folder or special file unpacked before it")


def _make_dir(archive: Path, root: str, name: str) -> None:
    target = _target(archive, root, name)
    if target is None:
        return
    if os.path.islink(target):
        raise _refuse(archive, name, "a folder would replace a link")
    os.makedirs(target, exist_ok=True)
    if not _within(root, os.path.realpath(target)):
        raise _refuse(archive, name, "it would be written outside the target folder")


def _write_file(archive: Path, root: str, name: str, src: BinaryIO) -> None:
    target = _target(archive, root, name)
    if target is None:
        raise _refuse(archive, name, "a file member without a name")
    _prepare_parent(archive, root, name, target)
    with open(target, "xb") as out:
        shutil.copyfileobj(src, out, _CHUNK)


def _make_symlink(archive: Path, root: str, name: str, link: str) -> None:
    target = _target(archive, root, name)
    if target is None:
        raise _refuse(archive, name, "a link without a name")
    if not link or "\x00" in link or os.path.isabs(link) or link.startswith(("/", "\\")):
        raise _refuse(archive, name, f"it is a link to the absolute path {link!r}")
    if re.match(r"^[A-Za-z]:", link):
        raise _refuse(archive, name, f"it is a link to the absolute path {link!r}")
    pointee = os.path.realpath(os.path.join(os.path.dirname(target), link))
    if not _within(root, pointee):
        raise _refuse(archive, name, f"it is a link to {link!r}, outside the target folder")
    _prepare_parent(archive, root, name, target)
    os.symlink(link, target)


def _copy_hardlink(archive: Path, root: str, name: str, link: str) -> None:
    target = _target(archive, root, name)
    if target is None:
        raise _refuse(archive, name, "a link without a name")
    try:
        src = _target(archive, root, link)
    except InputError:
        raise _refuse(
            archive, name, f"it is a hard link to {link!r}, outside the target folder"
        ) from None
    if src is None or not _within(root, os.path.realpath(src)) or not os.path.isfile(src):
        raise _refuse(
            archive, name, f"it is a hard link to {link!r}, which is not a file unpacked before it"
        )
    _prepare_parent(archive, root, name, target)
    shutil.copyfile(src, target)


def _check_all_names(archive: Path, names: Iterable[str]) -> None:
    for name in names:
        _member_parts(archive, name)


def _extract_zip(archive: Path, root: str) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a readable zip archive ({exc})", path=archive) from None
    with zf:
        infos = zf.infolist()
        _check_all_names(archive, (i.filename for i in infos))
        for info in infos:
            mode = (info.external_attr >> 16) & 0xFFFF
            ftype = stat.S_IFMT(mode) if info.create_system == 3 else 0
            if info.is_dir() or ftype == stat.S_IFDIR:
                _make_dir(archive, root, info.filename)
            elif ftype == stat.S_IFLNK:
                link = zf.read(info).decode("utf-8", errors="surrogateescape")
                _make_symlink(archive, root, info.filename, link)
            elif ftype in (0, stat.S_IFREG):
                try:
                    with zf.open(info) as src:
                        _write_file(archive, root, info.filename, src)
                except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as exc:
                    raise InputError(
                        f"could not unpack member {info.filename!r} ({exc})", path=archive
                    ) from None
            else:
                raise _refuse(archive, info.filename, "it is a device file or other special file")


def _extract_tar(archive: Path, root: str) -> None:
    try:
        tf = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"not a readable tar.gz archive ({exc})", path=archive) from None
    with tf:
        try:
            # One sequential pass (no seeking back in the gzip stream); every member is checked
            # before it is written, and the caller deletes the folder if one is refused.
            for m in tf:
                if m.isdir():
                    _make_dir(archive, root, m.name)
                elif m.issym():
                    _make_symlink(archive, root, m.name, m.linkname)
                elif m.islnk():
                    _copy_hardlink(archive, root, m.name, m.linkname)
                elif m.isreg():
                    src = tf.extractfile(m)
                    if src is None:
                        raise _refuse(archive, m.name, "its data cannot be read")
                    with src:
                        _write_file(archive, root, m.name, src)
                else:
                    raise _refuse(
                        archive, m.name, "it is a device file, FIFO or other special file"
                    )
        except (tarfile.TarError, EOFError) as exc:
            raise InputError(f"could not unpack the tar.gz archive ({exc})", path=archive) from None


def _check_links_within(folder: Path, archive: Path) -> None:
    """After unpacking: every symbolic link under ``folder`` must resolve inside it."""
    base = os.path.realpath(folder)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not _within(base, os.path.realpath(path)):
                rel = os.path.relpath(path, base)
                raise _refuse(archive, rel, "after unpacking, this link points outside the folder")
