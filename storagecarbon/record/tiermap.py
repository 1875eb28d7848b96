"""Which physical device holds each tier of a measured run: the trace header's device list.

* A directory (a tier's ``path``, LMCache's ``local_disk`` path, the command's working directory)
  -> its mount (longest-prefix match over ``/proc/self/mounts``; ``st_dev`` through
  ``/sys/dev/block/MAJ:MIN`` when the mount source is not a block device path, e.g. ``/dev/root``)
  -> the block device (``/dev/mapper/NAME`` via ``/sys/class/block/dm-*/dm/name``; dm/md devices to
  their ``slaves``; partitions to their parent disk: ``vda1`` -> ``vda``) -> the disk's
  ``/sys/block/<disk>/device/model`` -> a device_db key by **exact** alias match.
* When the disk is virtual (virtio ``vd*``/``xvd*``, QEMU/VMware/Hyper-V/cloud block-store models)
  or its model is not in device_db, the scenario's key (``hardware.ssd.device``) is used with
  ``stand_in=True`` and a note; without a scenario key ``db_key`` stays ``None`` (missing, not
  guessed).
* GPUs come from NVML (names such as ``NVIDIA H100 80GB HBM3``) and resolve the same way.

Device ids: ``host``, ``dram``, ``gpu<i>``, ``ssd0``, ``hdd0``. ``sys_root`` and ``mounts_text``
are injectable so tests run on a fake sysfs tree.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..trace import DeviceEntry

VIRTUAL_PREFIXES = ("vd", "xvd", "loop", "zram", "ram", "nbd", "rbd")
VIRTUAL_MARKERS = ("qemu", "virtual", "vmware", "vbox", "msft", "amazon elastic block store",
                   "persistentdisk", "google", "0x1af4", "red hat", "xen")
STAND_IN_VIRTUAL = "virtual disk: device_db record is a stand-in"


@dataclass(frozen=True)
class Mount:
    source: str
    mount_point: str
    fstype: str


def _unescape_mount(s: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal
    for a, b in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        s = s.replace(a, b)
    return s


def parse_mounts(text: str) -> list[Mount]:
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3:
            out.append(Mount(_unescape_mount(f[0]), _unescape_mount(f[1]), f[2]))
    return out


def mount_of(path: str | Path, mounts: list[Mount]) -> Mount | None:
    """The mount holding ``path`` (longest mount-point prefix; the last one mounted wins ties)."""
    p = os.path.realpath(str(path))
    best: Mount | None = None
    for m in mounts:
        mp = m.mount_point.rstrip("/") or "/"
        if p == mp or p.startswith(mp if mp.endswith("/") else mp + "/") or mp == "/":
            if best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/"):
                best = m
    return best


@dataclass(frozen=True)
class BlockInfo:
    """What a directory sits on."""

    path: str
    mount_point: str | None = None
    fstype: str | None = None
    source: str | None = None
    block: str | None = None            # the block device the filesystem is on (vda1, dm-0, md0)
    disks: tuple[str, ...] = ()         # whole physical disks under it (names in /proc/diskstats)
    model: str | None = None
    vendor: str | None = None
    virtual: bool = False
    rotational: bool | None = None
    size_bytes: float | None = None
    reason: str = ""


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


class _Sys:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def cls(self, name: str) -> Path:
        return self.root / "class" / "block" / name

    def exists(self, name: str) -> bool:
        return self.cls(name).exists()

    def dm_by_name(self, name: str) -> str | None:
        for d in sorted((self.root / "class" / "block").glob("dm-*")):
            if _read(d / "dm" / "name") == name:
                return d.name
        return None

    def by_devnum(self, major: int, minor: int) -> str | None:
        p = self.root / "dev" / "block" / f"{major}:{minor}"
        if not p.exists():
            return None
        return Path(os.path.realpath(p)).name

    def physical(self, name: str, _depth: int = 0) -> list[str]:
        """Whole disks under a block device (partitions -> parent, dm/md -> slaves)."""
        c = self.cls(name)
        if _depth > 8:
            return []
        slaves = sorted(x.name for x in (c / "slaves").iterdir()) if (c / "slaves").is_dir() else []
        if slaves:
            out: list[str] = []
            for s in slaves:
                for d in self.physical(s, _depth + 1):
                    if d not in out:
                        out.append(d)
            return out
        if (c / "partition").exists():
            return [Path(os.path.realpath(c)).parent.name]
        return [name]


def block_info(path: str | Path, *, sys_root: str | Path = "/sys", mounts_text: str | None = None) -> BlockInfo:
    """Resolve a directory to its mount, block device and physical disk(s) (see module doc)."""
    sysfs = _Sys(sys_root)
    if mounts_text is None:
        mounts_text = _read(Path("/proc/self/mounts")) or ""
    m = mount_of(path, parse_mounts(mounts_text))
    info = BlockInfo(path=str(path), mount_point=m.mount_point if m else None,
                     fstype=m.fstype if m else None, source=m.source if m else None)
    block: str | None = None
    how = ""
    if m is not None and m.source.startswith("/dev/"):
        if m.source.startswith("/dev/mapper/"):
            block = sysfs.dm_by_name(m.source[len("/dev/mapper/"):])
            how = f"mount {m.mount_point} on {m.source}"
        else:
            cand = Path(os.path.realpath(m.source)).name if os.path.exists(m.source) else Path(m.source).name
            if sysfs.exists(cand):
                block = cand
                how = f"mount {m.mount_point} on {m.source}"
    if block is None:
        existing = Path(os.path.realpath(str(path)))
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            st = os.stat(existing)
            blk = sysfs.by_devnum(os.major(st.st_dev), os.minor(st.st_dev))
        except OSError:
            blk = None
        if blk is not None and sysfs.exists(blk):
            block = blk
            how = f"st_dev {os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    if block is None:
        src = f"{m.source} ({m.fstype}) at {m.mount_point}" if m else "no mount"
        return replace(info, reason=f"{path} is not on a block device: {src}")
    disks = tuple(sysfs.physical(block))
    d0 = disks[0] if disks else block
    dev = sysfs.cls(d0) / "device"
    model = _read(dev / "model")
    vendor = _read(dev / "vendor")
    rot = _read(sysfs.cls(d0) / "queue" / "rotational")
    size = _read(sysfs.cls(d0) / "size")
    text = " ".join(x for x in (model, vendor) if x).lower()
    virtual = d0.startswith(VIRTUAL_PREFIXES) or any(k in text for k in VIRTUAL_MARKERS)
    return replace(info, block=block, disks=disks, model=model, vendor=vendor, virtual=virtual,
                   rotational=None if rot is None else rot == "1",
                   size_bytes=float(size) * 512 if size and size.isdigit() else None,
                   reason=f"{how} -> {block}" + (f" -> {'+'.join(disks)}" if disks != (block,) else ""))


# ------------------------------------------------------------------------------------ tier map
@dataclass
class TierMap:
    """Devices for the trace header plus what the sensors need to fill them."""

    devices: list[DeviceEntry]
    disk_blocks: dict[str, list[str]] = field(default_factory=dict)  # device id -> diskstats names
    disk_paths: dict[str, str] = field(default_factory=dict)         # device id -> directory
    disk_info: dict[str, BlockInfo] = field(default_factory=dict)
    primary_disk: str | None = None                                   # where the run's files go
    notes: list[str] = field(default_factory=list)

    def device(self, device_id: str) -> DeviceEntry | None:
        return next((d for d in self.devices if d.id == device_id), None)

    def has(self, device_id: str) -> bool:
        return self.device(device_id) is not None

    def header_dict(self) -> dict[str, Any]:
        return {"devices": self.devices, "notes": list(self.notes),
                "tier_map": {d: {"path": self.disk_paths.get(d), "blocks": self.disk_blocks.get(d),
                                 "reason": self.disk_info[d].reason if d in self.disk_info else ""}
                             for d in set(self.disk_blocks) | set(self.disk_paths)}}


def _cpu_name() -> str:
    txt = _read(Path("/proc/cpuinfo")) or ""
    for line in txt.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _resolve(db: Any, key: str | None) -> str | None:
    """device_db key for a key/alias (exact); the string itself when no db is loaded."""
    if key is None:
        return None
    if db is None:
        return key
    rec = db.resolve(key)
    return rec.key if rec is not None else None


def _disk_tier_paths(scenario: Any) -> dict[str, str | None]:
    """Disk tier -> directory: the tier's own ``path``, else LMCache's ``local_disk`` path for the
    ssd tier (or the hdd tier when there is no ssd tier)."""
    tiers = scenario.hardware.tiers()
    kv_disk = scenario.placement.kv.local_disk
    kv_path = kv_disk.path if kv_disk is not None and kv_disk.enabled else None
    disk_tiers = [t for t in ("ssd", "hdd") if t in tiers]
    out: dict[str, str | None] = {t: tiers[t].path for t in disk_tiers}
    if kv_path is not None and disk_tiers and out[disk_tiers[0]] is None:
        out[disk_tiers[0]] = kv_path
    return out


def map_tiers(scenario: Any = None, *, db: Any = None, gpus: list[DeviceEntry] | None = None,
              disk_paths: dict[str, str | Path] | None = None, sys_root: str | Path = "/sys",
              mounts_text: str | None = None, memory_bytes: float | None = None,
              base_dir: str | Path | None = None) -> TierMap:
    """Build the device list of a measured run.

    ``scenario``: a :class:`storagecarbon.scenario.Scenario` (optional); ``db``: a loaded
    :class:`~storagecarbon.devicedb.DeviceDB` (``None``: keys are taken as given, unverified);
    ``gpus``: entries from :meth:`NvmlSensor.devices`; ``disk_paths``: tier (``ssd``/``hdd``, or
    ``auto`` to pick by the disk's rotational flag) -> directory, overriding the scenario's paths;
    ``base_dir``: what relative paths are relative to (the command's working directory).
    """
    tiers = scenario.hardware.tiers() if scenario is not None else {}
    notes: list[str] = []
    devices: list[DeviceEntry] = []
    if scenario is not None and db is None:
        notes.append("device_db not loaded: scenario device keys used as given, unverified")

    # host and dram
    h = tiers.get("host")
    cpu = _cpu_name()
    h_key = _resolve(db, h.device) if h else (_resolve(db, cpu) if db is not None else None)
    devices.append(DeviceEntry(id="host", tier="host", db_key=h_key, name=cpu, count=h.count if h else 1,
                               share=h.share if h else 1.0))
    dr = tiers.get("dram")
    devices.append(DeviceEntry(id="dram", tier="dram", db_key=_resolve(db, dr.device) if dr else None,
                               name="host DRAM", count=dr.count if dr else 1,
                               capacity_bytes=None if dr else memory_bytes))

    # GPUs
    g = tiers.get("gpu")
    g_key = _resolve(db, g.device) if g else None
    for e in gpus or []:
        found = _resolve(db, e.name) if db is not None else None
        if found is not None:
            if g_key is not None and g_key != found:
                notes.append(f"{e.id}: scenario says {g.device!r} but NVML sees {e.name!r} ({found}); using the measured GPU")
            devices.append(replace(e, tier="hbm", db_key=found))
        elif g_key is not None:
            devices.append(replace(e, tier="hbm", db_key=g_key, stand_in=True,
                                   note=f"NVML name {e.name!r} is not a device_db alias: scenario's record is a stand-in"))
        else:
            devices.append(replace(e, tier="hbm", db_key=None,
                                   note=f"NVML name {e.name!r} is not a device_db alias"))
    if g is not None:
        if not gpus:
            notes.append(f"scenario declares {g.count} x {g.device} but no GPU was measured here; GPUs left out")
        elif len(gpus) != g.count:
            notes.append(f"scenario declares {g.count} GPU(s), NVML sees {len(gpus)}; using the measured GPUs")

    # disks
    want: dict[str, str | None] = _disk_tier_paths(scenario) if scenario is not None else {}
    for t, p in (disk_paths or {}).items():
        want[t] = str(p)
    if base_dir is not None:
        want = {t: (str(Path(base_dir) / p) if p is not None and not os.path.isabs(p) else p) for t, p in want.items()}
    tm = TierMap(devices=devices, notes=notes)
    mapped_blocks: dict[str, str] = {}
    for t, p in want.items():
        info = block_info(p, sys_root=sys_root, mounts_text=mounts_text) if p is not None else None
        tier = t
        if t == "auto":
            if info is None or info.virtual or info.rotational is None:
                tier = "ssd"
                notes.append(f"{p}: tier assumed ssd ({'virtual disk' if info and info.virtual else 'unknown medium'})")
            else:
                tier = "hdd" if info.rotational else "ssd"
        did = f"{tier}0"
        if tm.has(did):
            notes.append(f"{p}: tier {tier} already mapped; ignored")
            continue
        hw = tiers.get(tier)
        s_key = _resolve(db, hw.device) if hw else None
        if hw is not None and s_key is None:
            notes.append(f"{did}: scenario device {hw.device!r} is not in device_db")
        count = hw.count if hw else 1
        entry = DeviceEntry(id=did, tier=tier, db_key=s_key, name="", count=count)
        if info is None:
            entry = replace(entry, note="no directory given: device-level IO not measured")
        elif not info.disks:
            entry = replace(entry, stand_in=s_key is not None, note=info.reason)
            tm.disk_paths[did] = str(p)
            tm.disk_info[did] = info
        else:
            model_key = _resolve(db, info.model) if (db is not None and info.model) else None
            name = info.model or info.disks[0]
            n_disks = len(info.disks)
            if model_key is not None:
                if s_key is not None and s_key != model_key:
                    notes.append(f"{did}: scenario says {hw.device!r} but {info.disks[0]} is {info.model!r} ({model_key}); using the measured disk")
                entry = replace(entry, db_key=model_key, name=name, count=n_disks, capacity_bytes=info.size_bytes)
            elif info.virtual:
                entry = replace(entry, name=name, stand_in=s_key is not None,
                                note=STAND_IN_VIRTUAL if s_key else "virtual disk: no device_db record")
            else:
                entry = replace(entry, name=name, stand_in=s_key is not None,
                                note=f"disk model {info.model!r} is not a device_db alias"
                                     + (": device_db record is a stand-in" if s_key else ""))
            tm.disk_paths[did] = str(p)
            tm.disk_info[did] = info
            fresh = [b for b in info.disks if b not in mapped_blocks]
            for b in info.disks:
                if b in mapped_blocks:
                    notes.append(f"{did}: disk {b} already counted for {mapped_blocks[b]}; its device IO is not counted twice")
            if fresh:
                tm.disk_blocks[did] = fresh
                for b in fresh:
                    mapped_blocks[b] = did
        devices.append(entry)
        if tm.primary_disk is None:
            tm.primary_disk = did
    # the LMCache disk path's device is where the run's files go
    if scenario is not None:
        kv_disk = scenario.placement.kv.local_disk
        if kv_disk is not None and kv_disk.enabled and kv_disk.path:
            kv_p = kv_disk.path if base_dir is None else str(Path(base_dir) / kv_disk.path)
            for did, p in tm.disk_paths.items():
                if os.path.realpath(kv_p).startswith(os.path.realpath(p)):
                    tm.primary_disk = did
    return tm


def remap_devices(devices: list[DeviceEntry], scenario: Any, db: Any = None,
                  label: str = "--scenario") -> tuple[list[DeviceEntry], list[str]]:
    """Map a recorded trace's devices to the scenario's hardware after the fact (``report --scenario``).

    Same ids and order (usage arrays are indexed by them). What the recording identified itself (a
    GPU by its NVML name, a disk by its model, both resolved to device_db) is kept; what it could
    not (``db_key`` None, or a stand-in) takes the scenario's device of the same tier, as
    :func:`map_tiers` would have at record time: host count and share, DRAM count (capacity from
    the per-GB record), disk count. Returns the devices and notes saying what was mapped.
    """
    tiers = scenario.hardware.tiers()
    out: list[DeviceEntry] = []
    notes: list[str] = []
    for d in devices:
        hw = tiers.get(d.tier)
        if hw is None or (d.db_key is not None and not d.stand_in):
            out.append(d)
            continue
        key = _resolve(db, hw.device)
        if key is None:
            notes.append(f"{d.id}: {label} device {hw.device!r} is not in device_db; left unmapped")
            out.append(d)
            continue
        if d.tier == "host":
            new = replace(d, db_key=key, count=hw.count, share=hw.share)
        elif d.tier == "dram":
            new = replace(d, db_key=key, count=hw.count, capacity_bytes=None)
        elif d.tier == "hbm":
            new = replace(d, db_key=key, stand_in=True, note=f"{d.name or d.id}: mapped by {label} (stand-in)")
        else:
            virtual = "virtual" in (d.note or "")
            new = replace(d, db_key=key, count=hw.count if not d.name or virtual else d.count,
                          stand_in=True, note=(STAND_IN_VIRTUAL if virtual else f"mapped by {label}: stand-in"))
        notes.append(f"{d.id}: mapped to {key} by {label}")
        out.append(new)
    return out, notes
