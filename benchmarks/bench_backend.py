"""Backend benchmarks: one JSON line per figure on stdout.

Run:  .venv/bin/python benchmarks/bench_backend.py [--quick]

Each ``bench_*`` function measures one thing and prints one JSON object per
figure (``{"bench": ..., "device": ..., "median_s": ..., ...}``); ``main()``
calls them in turn. Append new ``bench_*`` functions and list them in
``BENCHES`` (the voxel figures go there too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, List

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vision3d.backend.gaussians import rasterize_gaussians  # noqa: E402

WARMUP = 2
RUNS = 7


def _emit(**fields) -> None:
    fields.setdefault("torch_threads", torch.get_num_threads())
    print(json.dumps(fields), flush=True)


def _time(fn: Callable[[], None], device: str, cpu_times: List[float] | None = None) -> List[float]:
    """Wall seconds per run; also appends process CPU seconds to ``cpu_times``
    (on a shared box the CPU time says what the work costs, the wall time
    what the neighbours left of it)."""
    for _ in range(WARMUP):
        fn()
    out = []
    for _ in range(RUNS):
        if device == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - c)
    return out


def gaussian_scene(n: int, width: int = 256, height: int = 256, device: str = "cpu", seed: int = 0):
    """A synthetic "all in view" scene: ``n`` Gaussians spread through the
    view frustum at depth 2..6, log-uniform scales 0.005..0.05 (about 1-8 px
    radius at f=256), opacities U(0.05, 1), RGB colours. About 15 Gaussians
    overlap an average pixel, so the transmittance early stop matters."""
    g = torch.Generator().manual_seed(seed)
    f = float(width)
    z = 2.0 + 4.0 * torch.rand(n, generator=g)
    u = torch.rand(n, generator=g) * width
    v = torch.rand(n, generator=g) * height
    means = torch.stack([(u - width / 2) * z / f, (v - height / 2) * z / f, z], dim=-1)
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(math.log(0.005) + math.log(10.0) * torch.rand(n, 3, generator=g))
    opac = 0.05 + 0.95 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    w2c = torch.eye(4)[None]
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])[None]
    ts = [means, quats, scales, opac, colors, w2c, K]
    return [t.to(device) for t in ts], width, height


def _bench_rasterize(n: int, backward: bool, device: str, render_depth: bool = True) -> None:
    (means, quats, scales, opac, colors, w2c, K), W, H = gaussian_scene(n, device=device)
    params = [p.requires_grad_(backward) for p in (means, quats, scales, opac, colors)]

    def run() -> None:
        out = rasterize_gaussians(*params, w2c, K, W, H, render_depth=render_depth)
        if backward:
            loss = out.rgb.sum() + out.alpha.sum() + (out.depth.sum() if render_depth else 0.0)
            loss.backward()
            for p in params:
                p.grad = None

    cpu_times: List[float] = []
    times = _time(run, device, cpu_times)
    out = rasterize_gaussians(*[p.detach() for p in params], w2c, K, W, H)
    _emit(
        bench="rasterize_gaussians" + ("_fwd_bwd" if backward else "_fwd"),
        device=device,
        backend=out.meta["backend"],
        n_gaussians=n,
        n_visible=int(out.meta["visible"].sum()),
        n_intersections=int(out.meta["flatten_ids"].numel()),
        width=W,
        height=H,
        render_depth=render_depth,
        median_s=round(statistics.median(times), 5),
        min_s=round(min(times), 5),
        cpu_median_s=round(statistics.median(cpu_times), 5),
        runs=len(times),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "default"),
        loadavg_1min=round(os.getloadavg()[0], 2),
    )


def bench_gaussian_cpu_build() -> None:
    """Time to get the C++ extension (a cold build if the cache is empty)."""
    from vision3d.backend.gaussians import _ext

    t = time.perf_counter()
    ok = _ext.get_ops() is not None
    _emit(bench="gaussian_cpu_ext_load", device="cpu", ok=ok, seconds=round(time.perf_counter() - t, 2),
          build_dir=str(_ext.extension_dir()))


def bench_gaussian_cpu_20k() -> None:
    _bench_rasterize(20_000, backward=False, device="cpu")
    _bench_rasterize(20_000, backward=True, device="cpu")


def bench_gaussian_cpu_100k() -> None:
    _bench_rasterize(100_000, backward=False, device="cpu")
    _bench_rasterize(100_000, backward=True, device="cpu")


def bench_gaussian_cuda() -> None:
    if not torch.cuda.is_available():
        _emit(bench="rasterize_gaussians", device="cuda", skipped="no CUDA device")
        return
    for n in (20_000, 100_000):
        _bench_rasterize(n, backward=False, device="cuda")
        _bench_rasterize(n, backward=True, device="cuda")


# --------------------------------------------------------------------------- voxels (issue 3)

VOX_VS = (0.2, 0.2, 0.4)  # KITTI SECOND/PointPillars-style grid, metres
VOX_PR = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
VOX_T, VOX_MAX = 5, 40000  # OpenPCDet KITTI test-time settings


def _interleaved(fns: dict, runs: int, warmup: int, device: str) -> dict:
    """Median/min seconds per callable, timed in alternating order in one
    loop, so that load from other processes hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(runs):
        for k in (names if r % 2 == 0 else names[::-1]):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fns[k]()
            if device == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def _bench_voxelize(device: str) -> None:
    from vision3d.backend.sparse_conv import import_spconv, spconv_available
    from vision3d.backend.voxels import Voxelizer
    from vision3d.backend.voxels.synthetic import synthetic_kitti_scan

    scan = synthetic_kitti_scan()  # 120,000 points, 64 rings, ring-ordered like a KITTI .bin
    runs, warmup = max(10 * RUNS, 30), max(WARMUP, 3)
    g = torch.Generator().manual_seed(0)
    for order, pts in (("ring", scan), ("shuffled", scan[torch.randperm(len(scan), generator=g)])):
        pts = pts.to(device)
        if device == "cpu":
            from vision3d.backend.voxels.voxelization import cpp_ops

            ours_be = "cpp" if cpp_ops() is not None else "numpy"  # what "auto" runs on CPU
        else:
            ours_be = "torch"
        fns = {"ours": lambda p=pts, v=Voxelizer(VOX_VS, VOX_PR, VOX_T, VOX_MAX, backend=ours_be): v(p)}
        extra = {}  # other CPU backends, each timed in its own interleaved pair with spconv
        if device == "cpu":
            if ours_be != "numpy":
                extra["ours_numpy"] = lambda p=pts, v=Voxelizer(VOX_VS, VOX_PR, VOX_T, VOX_MAX, backend="numpy"): v(p)
            extra["ours_torch"] = lambda p=pts, v=Voxelizer(VOX_VS, VOX_PR, VOX_T, VOX_MAX, backend="torch"): v(p)
        if spconv_available():
            import_spconv()
            from spconv.pytorch.utils import PointToVoxel

            gen = PointToVoxel(list(VOX_VS), list(VOX_PR), 4, VOX_MAX, VOX_T, device=torch.device(device))
            fns["spconv"] = lambda p=pts, gen=gen: gen(p)
        # Interleave pairs only: a multi-threaded torch op leaves OpenMP
        # threads spinning for a while, which taxes whichever callable comes
        # next in a larger rotation. The slow torch path is timed alone.
        res = _interleaved(fns, runs, warmup, device)
        for name, fn in extra.items():
            pair = {name: fn}
            if name == "ours_numpy" and "spconv" in fns:
                pair["spconv"] = fns["spconv"]
            n = runs if name != "ours_torch" else max(runs // 5, 5)
            r = _interleaved(pair, n, warmup, device)
            res[name] = r[name]
            if "spconv" in r:
                res[name + "_spconv"] = r["spconv"]
        out = fns["ours"]()
        fields = dict(bench="voxelize", device=device, order=order, points=len(pts), voxels=len(out.coords),
                      max_points_per_voxel=VOX_T, max_voxels=VOX_MAX, backend=ours_be,
                      median_s=round(res["ours"][0], 6), min_s=round(res["ours"][1], 6), runs=runs)
        if "ours_numpy" in res:
            fields["numpy_backend_median_s"] = round(res["ours_numpy"][0], 6)
            fields["numpy_backend_min_s"] = round(res["ours_numpy"][1], 6)
        if "ours_torch" in res:
            fields["torch_backend_median_s"] = round(res["ours_torch"][0], 6)
        if "spconv" in res:
            fields["spconv_median_s"] = round(res["spconv"][0], 6)
            fields["spconv_min_s"] = round(res["spconv"][1], 6)
            fields["ratio_vs_spconv"] = round(res["ours"][0] / res["spconv"][0], 3)
            fields["ratio_vs_spconv_min"] = round(res["ours"][1] / res["spconv"][1], 3)
            if "ours_numpy_spconv" in res:
                fields["numpy_ratio_vs_spconv"] = round(res["ours_numpy"][0] / res["ours_numpy_spconv"][0], 3)
        else:
            fields["spconv"] = "not installed"
        fields["loadavg_1min"] = round(os.getloadavg()[0], 2)
        if device == "cuda":
            fields["gpu"] = torch.cuda.get_device_name()
        _emit(**fields)


def bench_voxelize_cpu() -> None:
    """Ours (default CPU backend: "cpp", and "numpy", "torch") vs spconv PointToVoxel, 120k-point KITTI-like scan."""
    _bench_voxelize("cpu")


def bench_voxelize_cuda() -> None:
    """Ours (torch backend) vs spconv's CUDA PointToVoxel, same scan."""
    if not torch.cuda.is_available():
        _emit(bench="voxelize", device="cuda", skipped="no CUDA device")
        return
    _bench_voxelize("cuda")


def voxel_shell_scene(n_target: int = 100_000, device: str = "cpu", seed: int = 0):
    """About ``n_target`` sparse voxels on a sphere shell (radius 0.8, 3 voxels thick; what a
    pruned SVRaster grid of an object looks like), corner densities U(-1, 4), SH degree 0."""
    g = torch.Generator().manual_seed(seed)
    # leaves of a regular grid in [-1, 1]^3 whose centre is within 1.5 voxels of the sphere
    res = max(16, int(round((n_target / (3 * 4 * math.pi * 0.8 ** 2)) ** 0.5 * 2)))
    vs = 2.0 / res
    ax = (torch.arange(res) + 0.5) * vs - 1.0
    c = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    c = c[((c.norm(dim=-1) - 0.8).abs() < 1.5 * vs)]
    sizes = torch.full((len(c),), vs)
    dens = torch.rand(len(c), 8, generator=g) * 5 - 1
    sh = torch.rand(len(c), 1, 3, generator=g) * 2 - 1
    return [t.to(device) for t in (c, sizes, dens, sh)]


def _bench_svraster(device: str, backend: str, n: int = 100_000, size: int = 256) -> None:
    """100k voxels on a sphere shell at 256^2, K = 3 samples, forward + backward of rgb + depth + alpha
    through :func:`vision3d.backend.svraster.render_view` with ``backend`` ("torch": the reference;
    "cpp": the C++ CPU kernels)."""
    from vision3d.backend.svraster import render_view
    from vision3d.core.cameras import intrinsics_from_fov, look_at

    centers, sizes, dens, sh = voxel_shell_scene(n, device)
    dens.requires_grad_(True)
    sh.requires_grad_(True)
    w2c = look_at(torch.tensor([0.0, -3.0, 0.5]), torch.zeros(3)).float().to(device)
    K = intrinsics_from_fov(45.0, size, size).float().to(device)
    segs = []

    def run() -> None:
        out = render_view(w2c, K, size, size, centers, sizes, dens, sh, samples=3, backend=backend)
        (out.rgb.sum() + out.depth.sum() + out.alpha.sum()).backward()
        dens.grad = sh.grad = None
        segs.append(out.n_segments)

    cpu_times: List[float] = []
    times = _time(run, device, cpu_times)
    name = "svraster_reference_fwd_bwd" if backend == "torch" else f"svraster_{backend}_fwd_bwd"
    _emit(bench=name, device=device, backend=backend, n_voxels=len(centers),
          n_segments=segs[-1], samples=3, width=size, height=size,
          median_s=round(statistics.median(times), 5), min_s=round(min(times), 5),
          cpu_median_s=round(statistics.median(cpu_times), 5), runs=len(times),
          loadavg_1min=round(os.getloadavg()[0], 2))


def bench_svraster_cpu_100k() -> None:
    _bench_svraster("cpu", "torch")


def bench_svraster_cpp_cpu_100k() -> None:
    from vision3d.backend.svraster.render import cpp_ops

    if cpp_ops() is not None:
        _bench_svraster("cpu", "cpp")


def bench_svraster_cuda_100k() -> None:
    if torch.cuda.is_available():
        _bench_svraster("cuda", "torch")


BENCHES: List[Callable[[], None]] = [
    bench_gaussian_cpu_build,
    bench_gaussian_cpu_20k,
    bench_gaussian_cpu_100k,
    bench_gaussian_cuda,
    bench_voxelize_cpu,
    bench_voxelize_cuda,
    bench_svraster_cpu_100k,
    bench_svraster_cpp_cpu_100k,
    bench_svraster_cuda_100k,
]


def main(argv: List[str] | None = None) -> None:
    global RUNS, WARMUP
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 warm-up, 3 runs (smoke test)")
    ap.add_argument("-k", default="", help="only run bench_* functions whose name contains this")
    args = ap.parse_args(argv)
    if args.quick:
        RUNS, WARMUP = 3, 1
    _emit(bench="host", device="cpu", cpu=platform.processor() or platform.machine(),
          cpu_count=os.cpu_count(), torch=torch.__version__)
    for fn in BENCHES:
        if args.k in fn.__name__:
            fn()


if __name__ == "__main__":
    main()
