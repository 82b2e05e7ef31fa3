// Hard voxelisation on the CPU: spconv's PointToVoxel rule, one sequential
// pass over the points with a dense per-cell table (as spconv's CPU kernel).
//
// Point by point, in input order (see vision3d/backend/voxels/voxelization.py):
//   * t = (p - range_min) / voxel_size per axis, in the points' precision
//     (double for float64, float otherwise; a true division, never a
//     multiplication by the reciprocal). The point is in the grid iff
//     0 <= t < grid_size on every axis, which is exactly spconv's
//     "0 <= floor(t) < grid_size" for the integer grid size, and NaN fails
//     it (as do inf and huge values, which spconv's int cast sends to
//     INT_MIN on x86). Outside: point_voxel_id = -1.
//   * a new cell opens voxel number M (first-come) unless max_voxels are
//     open; then the point is dropped (point_voxel_id = -1);
//   * a point of an open voxel takes the next slot if one of the T is free;
//     either way it keeps the voxel's id.
//
// The table (int32 voxel id + 1 per grid cell, 0 = empty) lives per thread
// and is kept between calls for grids up to kCacheCells cells: only the cells
// a call touched are reset, so a call costs O(points), not O(cells). Larger
// grids get a calloc'ed table for the call (zero pages are mapped lazily, so
// that too costs only the pages touched). Python caps the grid size it sends.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kCacheCells = int64_t(1) << 24;  // 64 MB of int32 per thread at most

// Table of voxel id + 1 per grid cell, 0 = empty.
struct CellTable {
    int32_t* data = nullptr;
    bool owned = false;  // calloc'ed for this call (large grids): pages are zeroed lazily
    ~CellTable() {
        if (owned) std::free(data);
    }
};

void get_cell_table(int64_t cells, CellTable& t) {
    thread_local std::vector<int32_t> cached;  // invariant: all 0 between calls
    if (cells > kCacheCells) {
        t.data = static_cast<int32_t*>(std::calloc(size_t(cells), sizeof(int32_t)));
        TORCH_CHECK(t.data != nullptr, "hard_voxelize: cannot allocate a table of ", cells, " cells");
        t.owned = true;
        return;
    }
    if (int64_t(cached.size()) < cells) {
        cached.clear();
        cached.shrink_to_fit();
        cached.assign(size_t(cells), 0);
    }
    t.data = cached.data();
}

// Pass 1: voxel of every point. Writes per-voxel cell keys, per-voxel stored
// point counts and the (voxel, slot) -> point table; returns M.
template <typename scalar_t>
int64_t assign(const scalar_t* pts, int64_t N, int64_t F, const double* lo_d, const double* vs_d,
               const int64_t* gs, int32_t* table, int64_t T, int64_t cap, int64_t* vkey,
               int32_t* cnt, int32_t* src, int64_t* pvid) {
    using acc_t = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;
    const acc_t lx = acc_t(lo_d[0]), ly = acc_t(lo_d[1]), lz = acc_t(lo_d[2]);
    const acc_t vx = acc_t(vs_d[0]), vy = acc_t(vs_d[1]), vz = acc_t(vs_d[2]);
    // Compare in double: a grid size >= 2**24 need not be a float.
    const double gx = double(gs[0]), gy = double(gs[1]), gz = double(gs[2]);
    const int64_t X = gs[0], Y = gs[1];
    int64_t M = 0;
    const scalar_t* p = pts;
    for (int64_t i = 0; i < N; ++i, p += F) {
        const acc_t tx = (acc_t(p[0]) - lx) / vx;
        const acc_t ty = (acc_t(p[1]) - ly) / vy;
        const acc_t tz = (acc_t(p[2]) - lz) / vz;
        const double dx = double(tx), dy = double(ty), dz = double(tz);
        // Written so that NaN fails: !(t >= 0 && t < g).
        if (!(dx >= 0.0 && dx < gx && dy >= 0.0 && dy < gy && dz >= 0.0 && dz < gz)) {
            if (pvid) pvid[i] = -1;
            continue;
        }
        const int64_t key = (int64_t(dz) * Y + int64_t(dy)) * X + int64_t(dx);  // t >= 0: trunc = floor
        int32_t v = table[key] - 1;
        if (v < 0) {
            if (M >= cap) {
                if (pvid) pvid[i] = -1;
                continue;
            }
            v = int32_t(M++);
            table[key] = v + 1;
            vkey[v] = key;
            cnt[v] = 0;
        }
        const int32_t c = cnt[v];
        if (c < T) {
            src[int64_t(v) * T + c] = int32_t(i);
            cnt[v] = c + 1;
        }
        if (pvid) pvid[i] = v;
    }
    return M;
}

// Pass 2: voxels[v, s] = points[src[v, s]] for s < cnt[v], else 0.
template <int64_t B>
void gather_rows_fixed(const char* pts, char* out, const int32_t* src, const int32_t* cnt, int64_t M,
                       int64_t T) {
    for (int64_t v = 0; v < M; ++v) {
        const int32_t* s = src + v * T;
        char* o = out + v * T * B;
        const int64_t c = cnt[v];
        for (int64_t j = 0; j < c; ++j) std::memcpy(o + j * B, pts + int64_t(s[j]) * B, B);
        if (c < T) std::memset(o + c * B, 0, size_t((T - c) * B));
    }
}

void gather_rows(const char* pts, char* out, const int32_t* src, const int32_t* cnt, int64_t M, int64_t T,
                 int64_t B) {
    switch (B) {
        case 12: return gather_rows_fixed<12>(pts, out, src, cnt, M, T);
        case 16: return gather_rows_fixed<16>(pts, out, src, cnt, M, T);
        case 20: return gather_rows_fixed<20>(pts, out, src, cnt, M, T);
        case 24: return gather_rows_fixed<24>(pts, out, src, cnt, M, T);
        case 32: return gather_rows_fixed<32>(pts, out, src, cnt, M, T);
        default: break;
    }
    for (int64_t v = 0; v < M; ++v) {
        const int32_t* s = src + v * T;
        char* o = out + v * T * B;
        const int64_t c = cnt[v];
        for (int64_t j = 0; j < c; ++j) std::memcpy(o + j * B, pts + int64_t(s[j]) * B, size_t(B));
        if (c < T) std::memset(o + c * B, 0, size_t((T - c) * B));
    }
}

// points [N, F] contiguous float16/bfloat16/float32/float64; lo, vs: 3 doubles
// (float32-rounded range minimum and voxel size); grid (X, Y, Z).
// Returns (voxels [M, T, F] points' dtype, coords [M, 3] int32 zyx,
// num_points [M] int32, point_voxel_id [N] int64 or an empty tensor).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> hard_voxelize(
    const at::Tensor& points, double lo_x, double lo_y, double lo_z, double vs_x, double vs_y,
    double vs_z, int64_t grid_x, int64_t grid_y, int64_t grid_z, int64_t T, int64_t max_voxels,
    bool want_ids) {
    TORCH_CHECK(points.device().is_cpu(), "hard_voxelize: points must be on the CPU");
    TORCH_CHECK(points.dim() == 2 && points.size(1) >= 3, "hard_voxelize: points must be [N, F>=3]");
    TORCH_CHECK(points.is_contiguous(), "hard_voxelize: points must be contiguous");
    TORCH_CHECK(T >= 1 && max_voxels >= 1, "hard_voxelize: T and max_voxels must be >= 1");
    TORCH_CHECK(grid_x >= 1 && grid_y >= 1 && grid_z >= 1, "hard_voxelize: empty grid");
    const int64_t N = points.size(0), F = points.size(1);
    TORCH_CHECK(N < (int64_t(1) << 31), "hard_voxelize: more than 2**31 points");
    const int64_t cells = grid_x * grid_y * grid_z;
    const int64_t cap = std::min<int64_t>(max_voxels, N);
    TORCH_CHECK(cap * T < (int64_t(1) << 40), "hard_voxelize: max_voxels * T too large");

    const double lo[3] = {lo_x, lo_y, lo_z};
    const double vs[3] = {vs_x, vs_y, vs_z};
    const int64_t gs[3] = {grid_x, grid_y, grid_z};
    const auto i32 = points.options().dtype(at::kInt);
    at::Tensor pvid = at::empty({want_ids ? N : 0}, points.options().dtype(at::kLong));

    // Scratch sized for the worst case; only the first M entries are touched
    // (uninitialised memory, so untouched pages cost nothing).
    std::unique_ptr<int64_t[]> vkey(new int64_t[size_t(std::max<int64_t>(cap, 1))]);
    std::unique_ptr<int32_t[]> cnt(new int32_t[size_t(std::max<int64_t>(cap, 1))]);
    std::unique_ptr<int32_t[]> src(new int32_t[size_t(std::max<int64_t>(cap * T, 1))]);
    CellTable tab;
    get_cell_table(cells, tab);
    int32_t* table = tab.data;

    int64_t M = 0;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, points.scalar_type(), "hard_voxelize", [&] {
        M = assign<scalar_t>(points.data_ptr<scalar_t>(), N, F, lo, vs, gs, table, T, cap, vkey.get(),
                             cnt.get(), src.get(), want_ids ? pvid.data_ptr<int64_t>() : nullptr);
    });
    if (!tab.owned)
        for (int64_t v = 0; v < M; ++v) table[vkey[v]] = 0;  // back to all 0 for the next call

    at::Tensor voxels = at::empty({M, T, F}, points.options());
    at::Tensor coords = at::empty({M, 3}, i32);
    at::Tensor num = at::empty({M}, i32);
    gather_rows(static_cast<const char*>(points.data_ptr()), static_cast<char*>(voxels.data_ptr()),
                src.get(), cnt.get(), M, T, F * int64_t(points.element_size()));
    int32_t* co = coords.data_ptr<int32_t>();
    int32_t* nu = num.data_ptr<int32_t>();
    for (int64_t v = 0; v < M; ++v) {
        const int64_t k = vkey[v];
        const int64_t x = k % grid_x, t = k / grid_x;
        co[3 * v + 0] = int32_t(t / grid_y);
        co[3 * v + 1] = int32_t(t % grid_y);
        co[3 * v + 2] = int32_t(x);
        nu[v] = cnt[v];
    }
    return {voxels, coords, num, pvid};
}

}  // namespace

TORCH_LIBRARY(vision3d_voxel_cpu, m) {
    m.def("hard_voxelize(Tensor points, float lo_x, float lo_y, float lo_z, float vs_x, float vs_y, "
          "float vs_z, int grid_x, int grid_y, int grid_z, int max_points_per_voxel, int max_voxels, "
          "bool want_ids) -> (Tensor, Tensor, Tensor, Tensor)",
          &hard_voxelize);
}
