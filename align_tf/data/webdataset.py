"""Webdataset tar shards (img2dataset's standard output) read as (key, image, caption) samples.

A webdataset shard is a tar whose members are grouped into samples by key: ``{key}.jpg`` (or
``.png``, ``.webp``, ...), ``{key}.txt`` (the caption) and ``{key}.json`` (img2dataset: url,
width, height, ...). The key is the member's path up to the first dot of its file name, and a
sample is a run of consecutive members with the same key (webdataset's own convention). Shards are
named with brace ranges (``shards/{00000..00999}.tar``) or globs; ``expand`` resolves both.

Reading is plain ``tarfile`` over ``tf.io.gfile`` (local or ``gs://``), so nothing beyond
TensorFlow is needed at run time. Damage is reported, never raised:

* a member whose data is cut short (a truncated download) ends the shard: the sample being read
  is reported as ``"corrupt_member"`` and the shard as damaged;
* a shard that ends without tar's end-of-archive blocks (cut at a member boundary) or with an
  unreadable header is reported as damaged; everything before the damage is read, everything
  after an unreadable header is lost (tar cannot be resynchronised), so it is not counted;
* a caption that is not UTF-8 makes its sample ``"corrupt_member"``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tarfile
from typing import Callable, Iterator

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
CAPTION_EXTENSION = "txt"
META_EXTENSION = "json"
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext
_BRACES = re.compile(r"\{([^{}]*)\}")
_END_BLOCKS = 2 * tarfile.BLOCKSIZE  # a tar ends with two zero blocks


@dataclasses.dataclass
class Sample:
    """One sample of a shard. ``image``/``caption`` are ``None`` when the sample lacks them;
    ``url`` is the json's ``url`` (img2dataset) if any; ``error`` is ``"corrupt_member"`` for a
    sample that could not be read whole."""

    key: str
    image: bytes | None = None
    caption: str | None = None
    url: str | None = None
    error: str | None = None


def expand_braces(pattern: str) -> list:
    """``{a..b}`` ranges (zero padding kept: ``{000..010}``) and ``{x,y}`` lists, as bash does."""
    match = _BRACES.search(pattern)
    if not match:
        return [pattern]
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    if ".." in body:
        low, high = body.split("..", 1)
        if not (low.isdigit() and high.isdigit()):
            raise ValueError(f"brace range {{{body}}} in {pattern!r} is not numeric")
        width = len(low) if low.startswith("0") or len(low) == len(high) else 0
        step = 1 if int(high) >= int(low) else -1
        items = [str(i).zfill(width) for i in range(int(low), int(high) + step, step)]
    else:
        items = body.split(",")
    return [p for item in items for p in expand_braces(head + item + tail)]


def expand(pattern: str, exists: Callable | None = None) -> list:
    """Sorted, distinct files of ``pattern``: comma-separated parts, each with brace ranges/lists
    and glob wildcards (``tf.io.gfile.glob``). A brace-named file that does not exist raises
    ``FileNotFoundError`` (a gap in a range is a mistake, not a filter)."""
    import tensorflow as tf
    files = set()
    for part in (p.strip() for p in _split_top_level_commas(pattern)):
        if not part:
            continue
        for name in expand_braces(part):
            if any(c in name for c in "*?["):
                files.update(tf.io.gfile.glob(name))
            elif (exists or tf.io.gfile.exists)(name):
                files.add(name)
            else:
                raise FileNotFoundError(f"{name} (from {pattern!r}) does not exist")
    if not files:
        raise FileNotFoundError(f"no files match {pattern!r}")
    return sorted(files)


def _split_top_level_commas(pattern: str) -> list:
    """Splits at commas outside braces (``a/{1,2}.tar,b/*.tar`` → two parts)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(pattern):
        depth += (c == "{") - (c == "}")
        if c == "," and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    return parts + [pattern[start:]]


def split_member(name: str) -> tuple:
    """``(key, extension)`` of a member name (extension lower-cased; ``("", "")`` if none)."""
    match = _KEY.match(name)
    return (match.group(1), match.group(2).lower()) if match else ("", "")


def _finish(sample: Sample, members: dict) -> Sample:
    """Fills ``sample`` from its members ``{extension: bytes}``."""
    for ext in IMAGE_EXTENSIONS:
        if ext in members:
            sample.image = members[ext]
            break
    if CAPTION_EXTENSION in members:
        try:
            sample.caption = members[CAPTION_EXTENSION].decode("utf-8")
        except UnicodeDecodeError:
            sample.error = "corrupt_member"
    if META_EXTENSION in members:
        try:
            meta = json.loads(members[META_EXTENSION])
            url = meta.get("url") if isinstance(meta, dict) else None
            sample.url = url if isinstance(url, str) and url else None
        except ValueError:
            pass  # metadata is optional: a bad json only loses the url
    return sample


def _ended_cleanly(tar: tarfile.TarFile) -> bool:
    """Whether the archive ends with its zero end blocks where iteration stopped (``False``: an
    unreadable header, or the file cut at a member boundary)."""
    tar.fileobj.seek(tar.offset)
    rest = tar.fileobj.read(1 << 16)
    return len(rest) >= _END_BLOCKS and not any(rest)


def read_samples(path: str) -> Iterator:
    """Yields the ``Sample``\\ s of the tar shard at ``path``, then ``None`` if the shard is
    damaged (module docstring). The tar may be gzip/bz2/xz-compressed."""
    import tensorflow as tf
    with tf.io.gfile.GFile(path, "rb") as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r:*")
        except (tarfile.TarError, OSError, EOFError) as e:
            log.warning("%s: not a readable tar (%s)", path, e)
            yield None
            return
        key, members = None, {}
        while True:
            member = None
            try:
                member = tar.next()
                if member is None:
                    break
                if not member.isfile() or not split_member(member.name)[0]:
                    continue  # directories, and files without an extension belong to no sample
                data = tar.extractfile(member).read()
            except (tarfile.TarError, OSError, EOFError, ValueError) as e:
                # Data cut short: the sample being read is incomplete, the rest of the shard gone.
                log.warning("%s: damaged at byte %d (%s)", path, tar.offset, e)
                failed = split_member(member.name)[0] if member is not None else key
                if key is not None and failed != key:
                    yield _finish(Sample(key), members)  # complete: the damage is in the next
                yield Sample(failed or "", error="corrupt_member")
                yield None
                return
            name_key, ext = split_member(member.name)
            if name_key != key:
                if key is not None:
                    yield _finish(Sample(key), members)
                key, members = name_key, {}
            members[ext] = data
        if key is not None:
            yield _finish(Sample(key), members)
        if not _ended_cleanly(tar):
            log.warning("%s: ends without a tar end marker at byte %d (truncated or a corrupt "
                        "header); the samples before it were read", path, tar.offset)
            yield None
