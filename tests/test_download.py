"""Downloads: checksum, resume, safe extraction, refusal of unpinned sources.

Everything runs against a loopback HTTP server (127.0.0.1, port 0) that serves archives the tests
build themselves; nothing goes to the internet.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import stat
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recalign.data import download as dl
from recalign.data.download import SOURCES, DownloadError, Source, download, safe_extract
from recalign.data.paths import default_data_dir, resolve_data_dir
from recalign.errors import InputError

RATINGS = b"user,item,rating,timestamp\n" + b"".join(
    f"{u},{i},{(u * i) % 5 + 1},{1_000_000 + u * 100 + i}\n".encode()
    for u in range(1, 40)
    for i in range(1, 30)
)
MOVIES = b"item,title\n" + b"".join(f"{i},Movie {i}\n".encode() for i in range(1, 30))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Loopback server
# --------------------------------------------------------------------------------------------


@dataclass
class Server:
    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    bytes_sent: int = 0
    honor_range: bool = True
    truncate_once_at: int | None = None  # send this many body bytes, then hang up (once)
    current: Server | None = None  # the per-test state the module's server answers from

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture(scope="module")
def _http_server():
    state = Server(base="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # bounds every read on the connection

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            st = state.current
            name = self.path.lstrip("/")
            rng = self.headers.get("Range")
            with lock:
                st.requests.append((name, rng))
            body = st.files.get(name)
            if body is None:
                self.send_error(404)
                return
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m and st.honor_range:
                start = int(m.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if st.truncate_once_at is not None:
                payload = payload[: st.truncate_once_at]
                st.truncate_once_at = None
            self.wfile.write(payload)
            with lock:
                st.bytes_sent += len(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # loopback only, any free port
    httpd.daemon_threads = True
    httpd.timeout = 5
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(_http_server):
    """A fresh view of the module's loopback server: no files, no requests seen."""
    _http_server.current = Server(base=_http_server.base)
    return _http_server.current


# --------------------------------------------------------------------------------------------
# Archive builders
# --------------------------------------------------------------------------------------------


def make_zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def make_tar(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def tar_special(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info


GOOD_ZIP = make_zip({"ds/ratings.csv": RATINGS, "ds/movies.csv": MOVIES, "ds/README": b"hi\n"})


def source_for(
    server: Server,
    fname: str,
    data: bytes,
    *,
    archive: str = "zip",
    archive_root: str | None = "ds",
    pinned: bool = True,
    sha256: str | None = None,
    size: int | None = None,
    required: tuple[str, ...] = ("ratings.csv", "movies.csv"),
) -> Source:
    server.files[fname] = data
    return Source(
        name="toy",
        url=server.url(fname),
        sha256=(sha256 or sha(data)) if pinned else None,
        folder="toy",
        required=required,
        archive=archive,
        size=size if size is not None else len(data),
        archive_root=archive_root,
    )


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------------------------
# Happy paths
# --------------------------------------------------------------------------------------------


def test_zip_download_verifies_extracts_and_is_not_repeated(server, tmp_path):
    src = source_for(server, "toy.zip", GOOD_ZIP)
    data = tmp_path / "data"
    out = download(src, data, progress=False)
    assert out == data / "toy"
    assert (out / "ratings.csv").read_bytes() == RATINGS
    assert (out / "movies.csv").read_bytes() == MOVIES
    assert listing(data) == ["toy"]  # no .part, no archive, no temporary folder
    assert len(server.requests) == 1
    assert server.requests[0][1] is None  # no Range on a fresh download

    again = download(src, data, progress=False)
    assert again == out
    assert len(server.requests) == 1  # present: nothing fetched


def test_tar_gz_without_archive_root(server, tmp_path):
    payload = make_tar([("ratings.csv", RATINGS), ("sub/movies.csv", MOVIES)])
    src = source_for(
        server,
        "toy.tar.gz",
        payload,
        archive="tar.gz",
        archive_root=None,
        required=("ratings.csv", "sub/movies.csv"),
    )
    out = download(src, tmp_path, progress=False, keep_archive=True)
    assert (out / "sub" / "movies.csv").read_bytes() == MOVIES
    assert listing(tmp_path) == ["toy", "toy.tar.gz"]


def test_plain_file_source(server, tmp_path):
    src = source_for(
        server, "Books.csv", RATINGS, archive="none", archive_root=None, required=("Books.csv",)
    )
    out = download(src, tmp_path, progress=False)
    assert (out / "Books.csv").read_bytes() == RATINGS
    assert listing(tmp_path) == ["toy"]


def test_tar_links_inside_the_folder_are_kept(server, tmp_path):
    payload = make_tar(
        [
            ("ds/ratings.csv", RATINGS),
            ("ds/movies.csv", MOVIES),
            tar_link("ds/alias.csv", "ratings.csv"),
            tar_link("ds/copy.csv", "ds/movies.csv", tarfile.LNKTYPE),
        ]
    )
    src = source_for(server, "toy.tar.gz", payload, archive="tar.gz")
    out = download(src, tmp_path, progress=False)
    assert (out / "alias.csv").is_symlink()
    assert (out / "alias.csv").read_bytes() == RATINGS
    assert (out / "copy.csv").read_bytes() == MOVIES


# --------------------------------------------------------------------------------------------
# Checksums and resuming
# --------------------------------------------------------------------------------------------


def test_sha256_mismatch_leaves_nothing(server, tmp_path):
    wrong = "0" * 64
    src = source_for(server, "toy.zip", GOOD_ZIP, sha256=wrong)
    with pytest.raises(InputError) as info:
        download(src, tmp_path / "data", progress=False)
    msg = str(info.value)
    assert wrong in msg and sha(GOOD_ZIP) in msg
    assert listing(tmp_path / "data") == []


def test_resume_requests_only_the_rest(server, tmp_path):
    src = source_for(server, "toy.zip", GOOD_ZIP)
    data = tmp_path / "data"
    data.mkdir()
    half = len(GOOD_ZIP) // 2
    (data / "toy.zip.part").write_bytes(GOOD_ZIP[:half])
    out = download(src, data, progress=False)
    assert server.requests == [("toy.zip", f"bytes={half}-")]
    assert server.bytes_sent == len(GOOD_ZIP) - half
    assert (out / "ratings.csv").read_bytes() == RATINGS
    assert listing(data) == ["toy"]


def test_resume_restarts_when_server_ignores_range(server, tmp_path):
    server.honor_range = False
    src = source_for(server, "toy.zip", GOOD_ZIP)
    (tmp_path / "toy.zip.part").write_bytes(b"garbage that is not the file")
    out = download(src, tmp_path, progress=False)
    assert server.requests[0][1] is not None  # asked for a range, got the whole file (200)
    assert server.bytes_sent == len(GOOD_ZIP)
    assert (out / "movies.csv").read_bytes() == MOVIES


def test_complete_part_file_is_accepted_on_416(server, tmp_path):
    src = source_for(server, "toy.zip", GOOD_ZIP)
    (tmp_path / "toy.zip.part").write_bytes(GOOD_ZIP)
    out = download(src, tmp_path, progress=False)
    assert server.bytes_sent == 0
    assert (out / "ratings.csv").is_file()


def test_broken_connection_keeps_part_and_next_call_resumes(server, tmp_path):
    src = source_for(server, "toy.zip", GOOD_ZIP)
    cut = len(GOOD_ZIP) // 3
    server.truncate_once_at = cut
    with pytest.raises(DownloadError, match="resume"):
        download(src, tmp_path, progress=False)
    assert (tmp_path / "toy.zip.part").stat().st_size == cut
    out = download(src, tmp_path, progress=False)
    assert server.requests[-1][1] == f"bytes={cut}-"
    assert (out / "ratings.csv").read_bytes() == RATINGS


def test_pinned_download_larger_than_expected_is_stopped(server, tmp_path):
    src = source_for(server, "toy.zip", GOOD_ZIP, size=len(GOOD_ZIP) - 10)
    with pytest.raises(InputError, match="more than the expected"):
        download(src, tmp_path, progress=False)
    assert listing(tmp_path) == []


def test_http_error_is_a_download_error(server, tmp_path):
    src = Source(
        name="toy",
        url=server.url("missing.zip"),
        sha256=sha(b"x"),
        folder="toy",
        required=("a",),
    )
    with pytest.raises(DownloadError, match="404"):
        download(src, tmp_path, progress=False)
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Unsafe archives
# --------------------------------------------------------------------------------------------


def assert_nothing_left(tmp_path: Path, data: Path) -> None:
    assert listing(data) == [], "a refused archive must leave nothing in the data folder"
    assert sorted(p.name for p in tmp_path.rglob("evil*")) == []


EVIL_NAMES = [
    "ds/../../evil.txt",
    "../evil.txt",
    "ds/../../../evil.txt",
    "/tmp/evil-absolute.txt",
    "C:/evil.txt",
    "ds\\..\\..\\evil.txt",
]


@pytest.mark.parametrize("evil", EVIL_NAMES)
def test_zip_member_escaping_is_refused(server, tmp_path, evil):
    payload = make_zip({"ds/ratings.csv": RATINGS, "ds/movies.csv": MOVIES, evil: b"pwned"})
    src = source_for(server, "toy.zip", payload)
    data = tmp_path / "a" / "data"
    with pytest.raises(InputError, match="refusing to unpack"):
        download(src, data, progress=False)
    assert_nothing_left(tmp_path, data)
    assert not Path("/tmp/evil-absolute.txt").exists()


@pytest.mark.parametrize("evil", EVIL_NAMES[:4])
def test_tar_member_escaping_is_refused(server, tmp_path, evil):
    payload = make_tar([("ds/ratings.csv", RATINGS), ("ds/movies.csv", MOVIES), (evil, b"pwned")])
    src = source_for(server, "toy.tar.gz", payload, archive="tar.gz")
    data = tmp_path / "a" / "data"
    with pytest.raises(InputError, match="refusing to unpack"):
        download(src, data, progress=False)
    assert_nothing_left(tmp_path, data)
    assert not Path("/tmp/evil-absolute.txt").exists()


@pytest.mark.parametrize(
    "entries",
    [
        # a link that leaves the folder, then a write through it
        [tar_link("ds/link", "../../.."), ("ds/link/evil.txt", b"pwned")],
        [tar_link("ds/link", "/etc")],
        [tar_link("ds/evil-passwd", "/etc/passwd")],
        # each link looks harmless at first, together they climb out
        [tar_link("b", "."), tar_link("a", "b/..")],
        # a link to the folder above the dataset's own top folder
        [tar_link("ds/up", "..")],
        [tar_link("ds/evil-hard", "../../outside.txt", tarfile.LNKTYPE)],
        [tar_link("ds/evil-hard", "/etc/passwd", tarfile.LNKTYPE)],
        [tar_special("ds/evil-dev", tarfile.CHRTYPE)],
        [tar_special("ds/evil-blk", tarfile.BLKTYPE)],
        [tar_special("ds/evil-fifo", tarfile.FIFOTYPE)],
    ],
    ids=[
        "symlink-escape-then-write",
        "symlink-absolute-dir",
        "symlink-absolute-file",
        "symlink-chain",
        "symlink-above-root",
        "hardlink-escape",
        "hardlink-absolute",
        "char-device",
        "block-device",
        "fifo",
    ],
)
def test_tar_links_and_devices_are_refused(server, tmp_path, entries):
    payload = make_tar([("ds/ratings.csv", RATINGS), ("ds/movies.csv", MOVIES), *entries])
    src = source_for(server, "toy.tar.gz", payload, archive="tar.gz")
    data = tmp_path / "a" / "data"
    with pytest.raises(InputError, match="refusing to unpack"):
        download(src, data, progress=False)
    assert_nothing_left(tmp_path, data)


@pytest.mark.parametrize("target", ["../../outside", "/etc/passwd", ".."])
def test_zip_symlink_escaping_is_refused(server, tmp_path, target):
    payload = make_zip(
        {"ds/ratings.csv": RATINGS, "ds/movies.csv": MOVIES}, symlinks={"ds/evil": target}
    )
    src = source_for(server, "toy.zip", payload)
    data = tmp_path / "a" / "data"
    with pytest.raises(InputError, match="refusing to unpack"):
        download(src, data, progress=False)
    assert_nothing_left(tmp_path, data)


def test_archive_without_required_files_is_refused(server, tmp_path):
    payload = make_zip({"ds/ratings.csv": RATINGS})
    src = source_for(server, "toy.zip", payload)
    with pytest.raises(InputError, match="movies.csv"):
        download(src, tmp_path, progress=False)
    assert listing(tmp_path) == []


def test_safe_extract_direct(tmp_path):
    archive = tmp_path / "x.zip"
    archive.write_bytes(make_zip({"a/b.txt": b"ok"}))
    dest = tmp_path / "out"
    dest.mkdir()
    safe_extract(archive, dest, "zip")
    assert (dest / "a" / "b.txt").read_bytes() == b"ok"


# --------------------------------------------------------------------------------------------
# Refusals before any network access
# --------------------------------------------------------------------------------------------


def test_unpinned_source_is_refused_unless_allowed(server, tmp_path, caplog):
    src = source_for(server, "toy.zip", GOOD_ZIP, pinned=False)
    with pytest.raises(InputError, match="--insecure-skip-checksum"):
        download(src, tmp_path, progress=False)
    assert server.requests == []
    assert listing(tmp_path) == []

    with caplog.at_level(logging.WARNING, logger=dl.__name__):
        out = download(src, tmp_path, progress=False, allow_unpinned=True)
    assert (out / "ratings.csv").read_bytes() == RATINGS
    assert sha(GOOD_ZIP) in caplog.text  # the hash is reported so that it can be pinned


def test_unknown_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(InputError) as info:
        download("ml-7m", tmp_path, progress=False)
    msg = str(info.value)
    assert "ml-7m" in msg
    for name in ("ml-100k", "ml-1m", "ml-10m", "ml-32m", "obd"):
        assert name in msg


def test_incomplete_existing_folder_is_not_overwritten(server, tmp_path):
    src = source_for(server, "toy.zip", GOOD_ZIP)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "ratings.csv").write_bytes(b"mine")
    with pytest.raises(InputError, match="movies.csv"):
        download(src, tmp_path, progress=False)
    assert server.requests == []
    assert (tmp_path / "toy" / "ratings.csv").read_bytes() == b"mine"


def test_non_http_urls_are_refused(tmp_path):
    src = Source(
        name="toy", url="file:///etc/passwd", sha256=sha(b""), folder="toy", required=("a",)
    )
    with pytest.raises(InputError, match="http"):
        download(src, tmp_path, progress=False)


# --------------------------------------------------------------------------------------------
# Registry and paths
# --------------------------------------------------------------------------------------------


def test_registry():
    for name in (
        "ml-100k",
        "ml-1m",
        "ml-10m",
        "ml-20m",
        "ml-25m",
        "ml-32m",
        "ml-latest-small",
        "ml-latest",
    ):
        s = SOURCES[name]
        assert s.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert s.folder == name and s.archive == "zip"
    assert SOURCES["ml-10m"].archive_root == "ml-10M100K"
    assert SOURCES["ml-latest"].sha256 is None  # regenerated over time: cannot be pinned
    assert SOURCES["amazon-books-2018"].archive == "none"
    assert SOURCES["obd"].folder == "obd" and SOURCES["obd"].pinned
    for s in SOURCES.values():
        assert s.url.startswith("https://")
        assert s.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", s.sha256)
        assert s.note


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("RECALIGN_DATA", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    monkeypatch.delenv("RECALIGN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "recalign"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "recalign"
    assert resolve_data_dir(None) == default_data_dir()
    assert resolve_data_dir(str(tmp_path / "x")) == tmp_path / "x"
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError):
        resolve_data_dir(tmp_path / "file")
