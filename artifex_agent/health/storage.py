"""This PC's disks and shared folders: free space, mounted, writable, read/write throughput."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

import psutil

from artifex_agent.config import SharesConfig, default_home, split_hostport
from artifex_agent.health.checks import CheckResult, HealthContext, check
from artifex_agent.hosts import is_local_host

GiB = 1 << 30
MiB = 1 << 20
# Below this a render can stop halfway (720p clips are small, caches and checkpoints are not).
DISK_FREE_MIN_GIB = 10.0
# Bytes written and read back per share; large enough to pass caches' write-behind.
SHARE_TEST_BYTES = 256 * MiB
_BLOCK = 8 * MiB  # the seed: "file chunk writes (≥ 8MB)"
# Read-only by design (the seed exports /data/models ro).
READ_ONLY_SHARES = ("models",)


def _existing(path: Path) -> Path:
    """`path`, or its nearest existing parent (free space is a property of the filesystem)."""
    path = path.expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_of(path: Path) -> tuple[str, str, str]:
    """(mount point, filesystem type, device) holding `path`."""
    real = os.path.realpath(path)
    best = ("", "", "")
    for part in psutil.disk_partitions(all=True):
        mp = part.mountpoint
        inside = real == mp or real.startswith(mp.rstrip(os.sep) + os.sep) or (
            sys.platform == "win32" and real.lower().startswith(mp.lower()))
        if inside and len(mp) > len(best[0]):
            best = (mp, part.fstype, part.device)
    return best


@check("disk", "local")
async def disk_free(ctx: HealthContext) -> list[CheckResult]:
    """Free space where this PC's agents write (one row per filesystem)."""
    # Agents are known only after connect(); local-stage checks start beside it, so use the config.
    cfgs = [a for a in ctx.cluster.agents if is_local_host(split_hostport(a.dial_address)[0])]
    paths = [(a.name, a.output_root) for a in cfgs] + [(a.name, a.models_root) for a in cfgs]
    paths = paths or [("home", default_home())]
    rows, seen = [], set()
    for owner, path in paths:
        where = _existing(Path(path))
        dev = os.stat(where).st_dev
        if dev in seen:
            continue
        seen.add(dev)
        usage = shutil.disk_usage(where)
        free = usage.free / GiB
        ok = free >= DISK_FREE_MIN_GIB
        rows.append(CheckResult(f"disk free {path}", ok=ok,
                                value=f"{free:.1f} GiB free of {usage.total / GiB:.0f} GiB",
                                target=f"≥ {DISK_FREE_MIN_GIB:.0f} GiB",
                                fix="" if ok else f"free space on {mount_of(where)[0] or where} ({owner} writes here)"))
    return rows


def _share_paths(shares: SharesConfig) -> dict[str, str]:
    if sys.platform == "win32":
        # The seed mounts projects and cache as drive letters on the Windows PC.
        return {"projects": shares.projects_drive + "\\", "cache": shares.cache_drive + "\\"}
    return {"models": shares.models, "projects": shares.projects, "cache": shares.cache}


def _configured(shares: SharesConfig, path: str, key: str) -> bool:
    # Defaults that do not exist mean "no shares here" (one PC, loopback), not a failure.
    return Path(path).exists() or getattr(shares, key, path) != getattr(SharesConfig(), key, path)


def _check_share(key: str, path: str) -> CheckResult:
    p = Path(path)
    name = f"share {key}"
    if not p.is_dir():
        return CheckResult(name, ok=False, value=f"{path} does not exist", target="mounted",
                           fix="mount it (NFS: mount -t nfs4 PC1:/exports/…; Windows: mount -o anon …; "
                               "see `config render`)")
    mp, fstype, device = mount_of(p)
    where = f"{fstype} {device}".strip() if mp else "local folder"
    if key in READ_ONLY_SHARES:
        ok = os.access(p, os.R_OK | os.X_OK)
        return CheckResult(name, ok=ok, value=f"{path}: {where}, readable" if ok else f"{path}: not readable",
                           target="readable", fix="" if ok else f"give this user read access to {path}")
    probe = p / f".artifex-health-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return CheckResult(name, ok=False, value=f"{path}: {where}, NOT writable ({exc.strerror})",
                           target="writable", fix="export it rw (NFS rw,no_root_squash / SMB read only = no) "
                                                  "and check the folder's owner")
    return CheckResult(name, ok=True, value=f"{path}: {where}, writable", target="mounted, writable")


@check("shares", "local")
async def shares(ctx: HealthContext) -> list[CheckResult]:
    """[shares] folders: there, mounted (or local on the PC that exports them), writable."""
    cfg = ctx.cluster.shares
    paths = {k: v for k, v in _share_paths(cfg).items() if _configured(cfg, v, k)}
    if not paths:
        return [CheckResult("shares", ok=True, required=False, value="not set up ([shares] defaults do not exist)",
                            target="", fix="")]
    return list(await asyncio.gather(*(asyncio.to_thread(_check_share, k, v) for k, v in paths.items())))


def share_throughput(path: Path, size: int = SHARE_TEST_BYTES) -> tuple[float, float]:
    """(write GB/s with fsync, read GB/s with the page cache dropped where the OS allows)."""
    target = path / f".artifex-health-{os.getpid()}.bin"
    block = os.urandom(_BLOCK)
    try:
        t0 = time.perf_counter()
        with open(target, "wb", buffering=0) as f:
            for _ in range(size // _BLOCK):
                f.write(block)
            os.fsync(f.fileno())
            if hasattr(os, "posix_fadvise"):
                # Without this the read-back comes from this PC's memory, not the share.
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        write = size / (time.perf_counter() - t0) / 1e9
        t0 = time.perf_counter()
        with open(target, "rb", buffering=0) as f:
            while f.readinto(bytearray(_BLOCK)):
                pass
        read = size / (time.perf_counter() - t0) / 1e9
        return write, read
    finally:
        target.unlink(missing_ok=True)


@check("share throughput", "bandwidth")
async def shares_throughput(ctx: HealthContext) -> list[CheckResult]:
    """Write then read back a file on each writable share (advice: a local disk may be the limit)."""
    cfg = ctx.cluster.shares
    target_gbs = ctx.cluster.network.bandwidth_target_gbit / 8
    rows = []
    for key, path in _share_paths(cfg).items():
        if key in READ_ONLY_SHARES or not _configured(cfg, path, key) or not os.access(path, os.W_OK):
            continue
        try:
            write, read = await asyncio.to_thread(share_throughput, Path(path))
        except OSError as exc:
            rows.append(CheckResult(f"share {key} throughput", ok=False, required=False,
                                    value=f"test failed: {exc.strerror}", fix="check free space and permissions"))
            continue
        ok = min(write, read) >= target_gbs
        rows.append(CheckResult(f"share {key} throughput", ok=ok, required=False,
                                value=f"write {write:.2f} GB/s, read {read:.2f} GB/s",
                                target=f"≥ {target_gbs:.2f} GB/s",
                                fix="" if ok else "NFS: rsize/wsize=1048576, nconnect=8, async for cache; "
                                                  "check the link's bandwidth row and the exporting PC's disk"))
    return rows
