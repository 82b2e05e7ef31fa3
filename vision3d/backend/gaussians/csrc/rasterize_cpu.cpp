// CPU kernels for 3D Gaussian splatting: fused EWA projection (forward and
// backward), tile binning, and tile rasterization (forward and backward).
//
// Semantics follow gsplat 1.5.3 (RasterizeToPixels3DGS{Fwd,Bwd}.cu,
// IntersectTile.cu) so the CPU and CUDA paths render the same image:
//   * a Gaussian is binned into every 16x16 tile its radius box touches;
//   * per tile, Gaussians are composited front to back in depth order
//     (ties: lower flat index first, as gsplat's stable radix sort);
//   * alpha = min(0.999, opacity * exp(-sigma)); fragments with sigma < 0 or
//     alpha < 1/255 are skipped;
//   * a pixel stops *before* the fragment that would take its transmittance
//     to <= 1e-4 (that fragment is not blended).
//
// Work layout differs from the GPU on purpose: one OpenMP task per tile, and
// inside a tile the loop runs Gaussian-outer / pixel-inner, so each Gaussian's
// parameters are loaded once per tile and its gradient is reduced in
// registers (no atomics). Only pixels on the chord of the ellipse
// sigma <= ln(255 opacity) (widened for rounding) are visited, row by row:
// everywhere else alpha < 1/255, so skipping them changes nothing.
//
// Gradients are written per intersection (each isect slot belongs to one
// tile, hence one thread) and reduced per Gaussian afterwards, which keeps the
// result deterministic regardless of thread count.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// Parameters of one Gaussian as seen by one image, gathered once per tile.
template <typename T> struct Splat {
    T mx, my, ca, cb, cc, op, sig_cut;
    int32_t jy0, jy1;  // rows of the radius box clipped to the tile, [0, bh)
    double q1, q2, q3;  // row chord: dx in -q3 dy +- sqrt(q1 dy^2 + q2), see row_span
    bool empty;
};

// sigma beyond which alpha = op * exp(-sigma) is certainly < 1/255. The small
// margin keeps the exact alpha test authoritative near the boundary, so the
// shortcut never changes which fragments are blended.
template <typename T> inline T sigma_cutoff(T op) {
    return std::log(op * T(255)) + T(1e-3);
}

template <typename T>
inline void load_splat(
    Splat<T> &s, int64_t g, const T *means2d, const T *conics, const T *opac,
    const int32_t *radii, int y0, int bh
) {
    s.mx = means2d[2 * g];
    s.my = means2d[2 * g + 1];
    s.ca = conics[3 * g];
    s.cb = conics[3 * g + 1];
    s.cc = conics[3 * g + 2];
    s.op = opac[g];
    s.sig_cut = sigma_cutoff(s.op);
    // pixel j has its centre at j + 0.5; keep rows with |j + 0.5 - my| <= ry + 1
    const double ry = radii[2 * g + 1] + 1.0;
    s.jy0 = std::max(0, (int32_t)std::floor((double)s.my - ry - 0.5) - y0);
    s.jy1 = std::min(bh, (int32_t)std::ceil((double)s.my + ry - 0.5) + 1 - y0);
    // 0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= L (a > 0) solved for dx:
    // dx = (-b dy +- sqrt((b^2 - a c) dy^2 + 2 a L)) / a
    const double a = s.ca, b = s.cb, c = s.cc;
    const double L = (double)s.sig_cut + 1e-2;
    s.empty = !(a > 0.0);
    const double ia = s.empty ? 0.0 : 1.0 / a;
    s.q1 = (b * b - a * c) * ia * ia;
    s.q2 = 2.0 * L * ia;
    s.q3 = b * ia;
}

// Columns [*jx0, *jx1) of tile row `py` (pixel-centre y) that can hold
// sigma <= sig_cut: the chord of the ellipse on that row, widened by a
// quarter pixel and a slightly larger cutoff so rounding can only add pixels
// (the exact alpha test still decides).
template <typename T>
inline bool row_span(const Splat<T> &s, double py, int x0, int bw, int *jx0, int *jx1) {
    const double dy = (double)s.my - py;
    const double disc = s.q1 * dy * dy + s.q2;
    if (disc < 0.0 || s.empty) return false;
    const double r = std::sqrt(disc), m = -s.q3 * dy;
    // dx = mx - px in [m - r, m + r]  =>  px in [mx - m - r, mx - m + r]
    const double lo = (double)s.mx - m - r - 0.25, hi = (double)s.mx - m + r + 0.25;
    // pixel j (centre j + 0.5) inside [lo, hi]  <=>  j in [ceil(lo - 0.5), floor(hi - 0.5)]
    *jx0 = std::max(0, (int)std::ceil(lo - 0.5) - x0);
    *jx1 = std::min(bw, (int)std::floor(hi - 0.5) + 1 - x0);
    return *jx0 < *jx1;
}

int num_threads() {
    return std::max<int>(1, at::get_num_threads());
}

void check_cpu_contig(const at::Tensor &t, const char *name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// ------------------------------------------------------------- projection
//
// Fused EWA projection, rule for rule the torch reference in projection.py
// (itself gsplat's fully_fused_projection with opacities): one pass per
// (camera, Gaussian) instead of ~150 small torch ops, whose per-op OpenMP
// barriers dominate on a busy two-core machine.

template <typename T> struct Mat3 {
    T m[3][3];
};

template <typename T> inline void quat_to_rotmat(const T *q, T qn[4], Mat3<T> &R) {
    const T n = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    // F.normalize's eps and division, so rounding matches the reference
    const T nn = std::max(n, T(1e-12));
    const T w = q[0] / nn, x = q[1] / nn, y = q[2] / nn, z = q[3] / nn;
    qn[0] = w; qn[1] = x; qn[2] = y; qn[3] = z;
    R.m[0][0] = 1 - 2 * (y * y + z * z); R.m[0][1] = 2 * (x * y - w * z); R.m[0][2] = 2 * (x * z + w * y);
    R.m[1][0] = 2 * (x * y + w * z); R.m[1][1] = 1 - 2 * (x * x + z * z); R.m[1][2] = 2 * (y * z - w * x);
    R.m[2][0] = 2 * (x * z - w * y); R.m[2][1] = 2 * (y * z + w * x); R.m[2][2] = 1 - 2 * (x * x + y * y);
}

// Everything the backward needs, recomputed from the inputs.
template <typename T> struct ProjState {
    T qn[4], qnorm;
    Mat3<T> R, M, S;      // rotation, R diag(s), world covariance
    T x, y, z, tx, ty;    // camera-space mean and the clamped Jacobian point
    bool clamp_x, clamp_y;
    T j00, j02, j11, j12;  // Jacobian entries
    T G[2][3], H[2][3];    // G = J W, H = G Sigma
    T a0, b, c0, a, c, det;
};

template <typename T>
inline void project_one(
    const T *mean, const T *quat, const T *scale, const T *W /*[3][4] rows of w2c*/,
    T fx, T fy, T cx, T cy, int64_t width, int64_t height, T eps2d, ProjState<T> &st
) {
    st.x = W[0] * mean[0] + W[1] * mean[1] + W[2] * mean[2] + W[3];
    st.y = W[4] * mean[0] + W[5] * mean[1] + W[6] * mean[2] + W[7];
    st.z = W[8] * mean[0] + W[9] * mean[1] + W[10] * mean[2] + W[11];
    st.qnorm = std::sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
    quat_to_rotmat(quat, st.qn, st.R);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) st.M.m[i][j] = st.R.m[i][j] * scale[j];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            st.S.m[i][j] = st.M.m[i][0] * st.M.m[j][0] + st.M.m[i][1] * st.M.m[j][1] +
                           st.M.m[i][2] * st.M.m[j][2];
    const T z = st.z;
    const T tan_fovx = T(0.5) * width / fx, tan_fovy = T(0.5) * height / fy;
    const T lxp = (width - cx) / fx + T(0.3) * tan_fovx, lxn = cx / fx + T(0.3) * tan_fovx;
    const T lyp = (height - cy) / fy + T(0.3) * tan_fovy, lyn = cy / fy + T(0.3) * tan_fovy;
    const T u = st.x / z, v = st.y / z;
    st.clamp_x = !(u <= lxp && u >= -lxn);
    st.clamp_y = !(v <= lyp && v >= -lyn);
    st.tx = z * std::min(lxp, std::max(-lxn, u));
    st.ty = z * std::min(lyp, std::max(-lyn, v));
    st.j00 = fx / z;
    st.j02 = -fx * st.tx / (z * z);
    st.j11 = fy / z;
    st.j12 = -fy * st.ty / (z * z);
    for (int k = 0; k < 3; ++k) {
        st.G[0][k] = st.j00 * W[0 * 4 + k] + st.j02 * W[2 * 4 + k];
        st.G[1][k] = st.j11 * W[1 * 4 + k] + st.j12 * W[2 * 4 + k];
    }
    for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 3; ++k)
            st.H[r][k] = st.G[r][0] * st.S.m[0][k] + st.G[r][1] * st.S.m[1][k] + st.G[r][2] * st.S.m[2][k];
    st.a0 = st.H[0][0] * st.G[0][0] + st.H[0][1] * st.G[0][1] + st.H[0][2] * st.G[0][2];
    st.b = st.H[0][0] * st.G[1][0] + st.H[0][1] * st.G[1][1] + st.H[0][2] * st.G[1][2];
    st.c0 = st.H[1][0] * st.G[1][0] + st.H[1][1] * st.G[1][1] + st.H[1][2] * st.G[1][2];
    st.a = st.a0 + eps2d;
    st.c = st.c0 + eps2d;
    st.det = st.a * st.c - st.b * st.b;
}

template <typename T>
void project_fwd_impl(
    const at::Tensor &means, const at::Tensor &quats, const at::Tensor &scales,
    const at::Tensor &opacities, const at::Tensor &viewmats, const at::Tensor &Ks,
    int64_t width, int64_t height, double near, double far, double eps2d, double radius_clip,
    bool antialiased, at::Tensor &radii, at::Tensor &means2d, at::Tensor &depths,
    at::Tensor &conics, at::Tensor &comps
) {
    const int64_t N = means.size(0), C = viewmats.size(0);
    const T *mp = means.data_ptr<T>(), *qp = quats.data_ptr<T>(), *sp = scales.data_ptr<T>();
    const T *op = opacities.data_ptr<T>(), *vp = viewmats.data_ptr<T>(), *kp = Ks.data_ptr<T>();
    int32_t *rp = radii.data_ptr<int32_t>();
    T *m2 = means2d.data_ptr<T>(), *dp = depths.data_ptr<T>(), *cp = conics.data_ptr<T>();
    T *comp = antialiased ? comps.data_ptr<T>() : nullptr;
    const T thr = T(1) / T(255);
    at::parallel_for(0, C * N, 2048, [&](int64_t b, int64_t e) {
        ProjState<T> st;
        for (int64_t idx = b; idx < e; ++idx) {
            const int64_t ci = idx / N, n = idx % N;
            const T *W = vp + ci * 16, *K = kp + ci * 9;
            rp[2 * idx] = rp[2 * idx + 1] = 0;
            m2[2 * idx] = m2[2 * idx + 1] = T(0);
            dp[idx] = T(0);
            cp[3 * idx] = cp[3 * idx + 1] = cp[3 * idx + 2] = T(0);
            if (comp) comp[idx] = T(0);
            const T z = W[8] * mp[3 * n] + W[9] * mp[3 * n + 1] + W[10] * mp[3 * n + 2] + W[11];
            if (!(z >= T(near) && z <= T(far))) continue;
            project_one(mp + 3 * n, qp + 4 * n, sp + 3 * n, W, K[0], K[4], K[2], K[5], width,
                        height, T(eps2d), st);
            if (!(st.det > T(0))) continue;
            T opac = op[n], cmp = T(1);
            if (comp) {
                cmp = std::sqrt(std::max(T(0), (st.a0 * st.c0 - st.b * st.b) / st.det));
                opac *= cmp;
            }
            if (!(opac >= thr)) continue;
            const T extend = std::min(T(3.33), std::sqrt(T(2) * std::log(opac / thr)));
            const T rx = std::ceil(extend * std::sqrt(std::max(st.a, T(0))));
            const T ry = std::ceil(extend * std::sqrt(std::max(st.c, T(0))));
            if (rx <= T(radius_clip) && ry <= T(radius_clip)) continue;
            const T mx = K[0] * st.x / st.z + K[2], my = K[4] * st.y / st.z + K[5];
            if (mx + rx <= 0 || mx - rx >= width || my + ry <= 0 || my - ry >= height) continue;
            rp[2 * idx] = (int32_t)rx;
            rp[2 * idx + 1] = (int32_t)ry;
            m2[2 * idx] = mx;
            m2[2 * idx + 1] = my;
            dp[idx] = st.z;
            cp[3 * idx] = st.c / st.det;
            cp[3 * idx + 1] = -st.b / st.det;
            cp[3 * idx + 2] = st.a / st.det;
            if (comp) comp[idx] = cmp;
        }
    });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> project_fwd(
    const at::Tensor &means, const at::Tensor &quats, const at::Tensor &scales,
    const at::Tensor &opacities, const at::Tensor &viewmats, const at::Tensor &Ks,
    int64_t width, int64_t height, double near, double far, double eps2d, double radius_clip,
    bool antialiased
) {
    for (auto *p : {&means, &quats, &scales, &opacities, &viewmats, &Ks})
        check_cpu_contig(*p, "project_fwd input");
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto opt = means.options();
    at::Tensor radii = at::empty({C, N, 2}, opt.dtype(at::kInt));
    at::Tensor means2d = at::empty({C, N, 2}, opt);
    at::Tensor depths = at::empty({C, N}, opt);
    at::Tensor conics = at::empty({C, N, 3}, opt);
    at::Tensor comps = at::empty({antialiased ? C : 0, antialiased ? N : 0}, opt);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_fwd", [&] {
        project_fwd_impl<scalar_t>(means, quats, scales, opacities, viewmats, Ks, width, height,
                                   near, far, eps2d, radius_clip, antialiased, radii, means2d,
                                   depths, conics, comps);
    });
    return {radii, means2d, depths, conics, comps};
}

// Backward of project_fwd for the entries with radii > 0 (the others are
// constant zeros). Parallel over Gaussians so per-Gaussian gradients need no
// atomics; per-camera (world_to_cam) gradients go to per-thread buffers.
template <typename T>
void project_bwd_impl(
    const at::Tensor &means, const at::Tensor &quats, const at::Tensor &scales,
    const at::Tensor &viewmats, const at::Tensor &Ks, int64_t width, int64_t height,
    double eps2d, const at::Tensor &radii, const at::Tensor &comps,
    const at::Tensor &v_means2d, const at::Tensor &v_depths, const at::Tensor &v_conics,
    const std::optional<at::Tensor> &v_comps, bool need_viewmat_grad,
    at::Tensor &v_means, at::Tensor &v_quats, at::Tensor &v_scales, at::Tensor &v_viewmats
) {
    const int64_t N = means.size(0), C = viewmats.size(0);
    const T *mp = means.data_ptr<T>(), *qp = quats.data_ptr<T>(), *sp = scales.data_ptr<T>();
    const T *vp = viewmats.data_ptr<T>(), *kp = Ks.data_ptr<T>();
    const int32_t *rp = radii.data_ptr<int32_t>();
    const T *gm = v_means2d.data_ptr<T>(), *gd = v_depths.data_ptr<T>(), *gc = v_conics.data_ptr<T>();
    const T *gcomp = v_comps.has_value() ? v_comps->data_ptr<T>() : nullptr;
    const T *cmp = gcomp ? comps.data_ptr<T>() : nullptr;
    T *vm = v_means.data_ptr<T>(), *vq = v_quats.data_ptr<T>(), *vs = v_scales.data_ptr<T>();
    T *vv = v_viewmats.data_ptr<T>();
    const int nt = num_threads();
    std::vector<T> vview((size_t)nt * C * 12, T(0));

#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        T *my_vview = &vview[(size_t)omp_get_thread_num() * C * 12];
#else
        T *my_vview = &vview[0];
#endif
        ProjState<T> st;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; ++n) {
            T v_S[3][3] = {{0}};  // gradient w.r.t. the world covariance, summed over cameras
            T v_mean[3] = {0, 0, 0};
            bool any = false;
            for (int64_t ci = 0; ci < C; ++ci) {
                const int64_t idx = ci * N + n;
                if (rp[2 * idx] <= 0 || rp[2 * idx + 1] <= 0) continue;
                any = true;
                const T *W = vp + ci * 16, *K = kp + ci * 9;
                const T fx = K[0], fy = K[4];
                project_one(mp + 3 * n, qp + 4 * n, sp + 3 * n, W, fx, fy, K[2], K[5], width,
                            height, T(eps2d), st);
                const T a = st.a, b = st.b, c = st.c, det = st.det, id2 = T(1) / (det * det);
                const T g1 = gc[3 * idx], g2 = gc[3 * idx + 1], g3 = gc[3 * idx + 2];
                // conic = (c, -b, a) / det, det = a c - b^2
                T v_a = g1 * (-c * c * id2) + g2 * (b * c * id2) + g3 * (T(1) / det - a * c * id2);
                T v_c = g1 * (T(1) / det - a * c * id2) + g2 * (a * b * id2) + g3 * (-a * a * id2);
                T v_b = g1 * (T(2) * b * c * id2) + g2 * (-T(1) / det - T(2) * b * b * id2) +
                        g3 * (T(2) * a * b * id2);
                if (gcomp && cmp[idx] > T(0)) {
                    // comp = sqrt(r), r = (a0 c0 - b^2) / det
                    const T num = st.a0 * st.c0 - st.b * st.b;
                    const T v_r = gcomp[idx] * T(0.5) / cmp[idx];
                    v_a += v_r * (st.c0 * det - num * c) * id2;
                    v_c += v_r * (st.a0 * det - num * a) * id2;
                    v_b += v_r * (-T(2) * b * (det - num)) * id2;
                }
                // Sigma2d = G Sigma G^T with V = [[v_a, v_b/2], [v_b/2, v_c]]:
                // v_G = 2 V H, v_Sigma += G^T V G
                const T V[2][2] = {{v_a, T(0.5) * v_b}, {T(0.5) * v_b, v_c}};
                T v_G[2][3];
                for (int r = 0; r < 2; ++r)
                    for (int k = 0; k < 3; ++k)
                        v_G[r][k] = T(2) * (V[r][0] * st.H[0][k] + V[r][1] * st.H[1][k]);
                for (int i = 0; i < 3; ++i)
                    for (int j = 0; j < 3; ++j)
                        v_S[i][j] += st.G[0][i] * (V[0][0] * st.G[0][j] + V[0][1] * st.G[1][j]) +
                                     st.G[1][i] * (V[1][0] * st.G[0][j] + V[1][1] * st.G[1][j]);
                // G = J W: v_J = v_G W^T (only the 4 non-zero entries matter)
                T v_j00 = 0, v_j02 = 0, v_j11 = 0, v_j12 = 0;
                for (int k = 0; k < 3; ++k) {
                    v_j00 += v_G[0][k] * W[0 * 4 + k];
                    v_j02 += v_G[0][k] * W[2 * 4 + k];
                    v_j11 += v_G[1][k] * W[1 * 4 + k];
                    v_j12 += v_G[1][k] * W[2 * 4 + k];
                }
                const T z = st.z, iz = T(1) / z, iz2 = iz * iz, iz3 = iz2 * iz;
                T v_x = 0, v_y = 0, v_z = 0;
                v_z += -fx * iz2 * v_j00 - fy * iz2 * v_j11 + T(2) * fx * st.tx * iz3 * v_j02 +
                       T(2) * fy * st.ty * iz3 * v_j12;
                const T v_tx = -fx * iz2 * v_j02, v_ty = -fy * iz2 * v_j12;
                // tx = z * clamp(x / z): x itself inside the limits, z * limit outside
                if (st.clamp_x) v_z += v_tx * st.tx * iz; else v_x += v_tx;
                if (st.clamp_y) v_z += v_ty * st.ty * iz; else v_y += v_ty;
                // means2d = (fx x / z + cx, fy y / z + cy), depth = z
                const T gmx = gm[2 * idx], gmy = gm[2 * idx + 1];
                v_x += gmx * fx * iz;
                v_y += gmy * fy * iz;
                v_z += -(gmx * fx * st.x + gmy * fy * st.y) * iz2 + gd[idx];
                // p = W m + t
                const T v_p[3] = {v_x, v_y, v_z};
                for (int k = 0; k < 3; ++k)
                    v_mean[k] += v_p[0] * W[0 * 4 + k] + v_p[1] * W[1 * 4 + k] + v_p[2] * W[2 * 4 + k];
                if (need_viewmat_grad) {
                    // W enters through p = W m + t and through G = J W (v_W += J^T v_G)
                    const T vJW[3][3] = {
                        {st.j00 * v_G[0][0], st.j00 * v_G[0][1], st.j00 * v_G[0][2]},
                        {st.j11 * v_G[1][0], st.j11 * v_G[1][1], st.j11 * v_G[1][2]},
                        {st.j02 * v_G[0][0] + st.j12 * v_G[1][0], st.j02 * v_G[0][1] + st.j12 * v_G[1][1],
                         st.j02 * v_G[0][2] + st.j12 * v_G[1][2]}};
                    T *o = my_vview + ci * 12;
                    for (int i = 0; i < 3; ++i) {
                        for (int k = 0; k < 3; ++k)
                            o[i * 4 + k] += v_p[i] * mp[3 * n + k] + vJW[i][k];
                        o[i * 4 + 3] += v_p[i];
                    }
                }
            }
            if (!any) continue;
            for (int k = 0; k < 3; ++k) vm[3 * n + k] += v_mean[k];
            // Sigma = M M^T, M = R diag(s): v_M = (v_S + v_S^T) M
            T v_M[3][3];
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j)
                    v_M[i][j] = (v_S[i][0] + v_S[0][i]) * st.M.m[0][j] +
                                (v_S[i][1] + v_S[1][i]) * st.M.m[1][j] +
                                (v_S[i][2] + v_S[2][i]) * st.M.m[2][j];
            T v_R[3][3];
            for (int j = 0; j < 3; ++j) {
                T acc = 0;
                for (int i = 0; i < 3; ++i) {
                    v_R[i][j] = v_M[i][j] * sp[3 * n + j];
                    acc += v_M[i][j] * st.R.m[i][j];
                }
                vs[3 * n + j] += acc;
            }
            const T w = st.qn[0], x = st.qn[1], y = st.qn[2], zq = st.qn[3];
            const T gw = 2 * (-zq * v_R[0][1] + y * v_R[0][2] + zq * v_R[1][0] - x * v_R[1][2] -
                              y * v_R[2][0] + x * v_R[2][1]);
            const T gx = 2 * (y * v_R[0][1] + zq * v_R[0][2] + y * v_R[1][0] - 2 * x * v_R[1][1] -
                              w * v_R[1][2] + zq * v_R[2][0] + w * v_R[2][1] - 2 * x * v_R[2][2]);
            const T gy = 2 * (-2 * y * v_R[0][0] + x * v_R[0][1] + w * v_R[0][2] + x * v_R[1][0] +
                              zq * v_R[1][2] - w * v_R[2][0] + zq * v_R[2][1] - 2 * y * v_R[2][2]);
            const T gz = 2 * (-2 * zq * v_R[0][0] - w * v_R[0][1] + x * v_R[0][2] + w * v_R[1][0] -
                              2 * zq * v_R[1][1] + y * v_R[1][2] + x * v_R[2][0] + y * v_R[2][1]);
            // qn = q / |q|: v_q = (v_qn - qn (qn . v_qn)) / |q|
            const T dot = w * gw + x * gx + y * gy + zq * gz;
            const T inv = T(1) / std::max(st.qnorm, T(1e-12));
            vq[4 * n + 0] += (gw - w * dot) * inv;
            vq[4 * n + 1] += (gx - x * dot) * inv;
            vq[4 * n + 2] += (gy - y * dot) * inv;
            vq[4 * n + 3] += (gz - zq * dot) * inv;
        }
    }
    if (need_viewmat_grad) {
        for (int t = 0; t < nt; ++t)
            for (int64_t ci = 0; ci < C; ++ci)
                for (int k = 0; k < 12; ++k) vv[ci * 16 + k] += vview[((size_t)t * C + ci) * 12 + k];
    }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> project_bwd(
    const at::Tensor &means, const at::Tensor &quats, const at::Tensor &scales,
    const at::Tensor &viewmats, const at::Tensor &Ks, int64_t width, int64_t height,
    double eps2d, const at::Tensor &radii, const at::Tensor &comps,
    const at::Tensor &v_means2d, const at::Tensor &v_depths, const at::Tensor &v_conics,
    const std::optional<at::Tensor> &v_comps, bool need_viewmat_grad
) {
    for (auto *p : {&means, &quats, &scales, &viewmats, &Ks, &radii, &comps, &v_means2d,
                    &v_depths, &v_conics})
        check_cpu_contig(*p, "project_bwd input");
    if (v_comps.has_value()) check_cpu_contig(*v_comps, "v_comps");
    at::Tensor v_means = at::zeros(means.sizes(), means.options());
    at::Tensor v_quats = at::zeros(quats.sizes(), quats.options());
    at::Tensor v_scales = at::zeros(scales.sizes(), scales.options());
    at::Tensor v_viewmats = at::zeros(viewmats.sizes(), viewmats.options());
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_bwd", [&] {
        project_bwd_impl<scalar_t>(means, quats, scales, viewmats, Ks, width, height, eps2d, radii,
                                   comps, v_means2d, v_depths, v_conics, v_comps,
                                   need_viewmat_grad, v_means, v_quats, v_scales, v_viewmats);
    });
    return {v_means, v_quats, v_scales, v_viewmats};
}

// ---------------------------------------------------------------- binning

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bin_impl(
    const at::Tensor &means2d, const at::Tensor &radii, const at::Tensor &depths,
    int64_t tile_size, int64_t tile_w, int64_t tile_h
) {
    const int64_t I = means2d.size(0), N = means2d.size(1);
    const int64_t TT = tile_w * tile_h;
    TORCH_CHECK(I * N < INT32_MAX, "cameras x Gaussians must be < 2^31 (flat ids are int32)");
    const T *m2 = means2d.data_ptr<T>();
    const int32_t *rad = radii.data_ptr<int32_t>();
    const T *dep = depths.data_ptr<T>();

    auto opt_i = means2d.options().dtype(at::kInt);
    at::Tensor tiles_per_gauss = at::empty({I, N}, opt_i);
    int32_t *tpg = tiles_per_gauss.data_ptr<int32_t>();
    // tile rectangle per Gaussian: [x0, y0, x1, y1) in tile units
    std::vector<int32_t> rect(4 * I * N);

    at::parallel_for(0, I * N, 4096, [&](int64_t b, int64_t e) {
        for (int64_t idx = b; idx < e; ++idx) {
            const float rx = (float)rad[2 * idx], ry = (float)rad[2 * idx + 1];
            if (rx <= 0 || ry <= 0) {
                tpg[idx] = 0;
                rect[4 * idx] = rect[4 * idx + 2] = 0;
                rect[4 * idx + 1] = rect[4 * idx + 3] = 0;
                continue;
            }
            // Same float arithmetic as gsplat's isect kernel.
            const float ts = (float)tile_size;
            const float tx = (float)m2[2 * idx] / ts, ty = (float)m2[2 * idx + 1] / ts;
            const float trx = rx / ts, try_ = ry / ts;
            auto clampi = [](float v, int64_t hi) {
                return (int32_t)std::min<float>(std::max<float>(v, 0.f), (float)hi);
            };
            const int32_t x0 = clampi(std::floor(tx - trx), tile_w);
            const int32_t y0 = clampi(std::floor(ty - try_), tile_h);
            const int32_t x1 = clampi(std::ceil(tx + trx), tile_w);
            const int32_t y1 = clampi(std::ceil(ty + try_), tile_h);
            rect[4 * idx] = x0;
            rect[4 * idx + 1] = y0;
            rect[4 * idx + 2] = x1;
            rect[4 * idx + 3] = y1;
            tpg[idx] = (x1 - x0) * (y1 - y0);
        }
    });

    // Counting sort into (image, tile) buckets; visiting Gaussians in flat
    // order leaves each bucket sorted by flat index, so a stable depth sort
    // afterwards breaks depth ties like gsplat does.
    std::vector<int64_t> counts(I * TT + 1, 0);
    for (int64_t idx = 0; idx < I * N; ++idx) {
        if (tpg[idx] == 0) continue;
        const int64_t i = idx / N;
        const int32_t *r = &rect[4 * idx];
        for (int32_t y = r[1]; y < r[3]; ++y)
            for (int32_t x = r[0]; x < r[2]; ++x) counts[i * TT + y * tile_w + x]++;
    }
    std::vector<int64_t> starts(I * TT + 1, 0);
    for (int64_t t = 0; t < I * TT; ++t) starts[t + 1] = starts[t] + counts[t];
    const int64_t M = starts[I * TT];
    TORCH_CHECK(M < INT32_MAX, "too many Gaussian-tile intersections: ", M);

    at::Tensor isect_offsets = at::empty({I, tile_h, tile_w}, opt_i);
    int32_t *offs = isect_offsets.data_ptr<int32_t>();
    for (int64_t t = 0; t < I * TT; ++t) offs[t] = (int32_t)starts[t];

    at::Tensor flatten_ids = at::empty({M}, opt_i);
    at::Tensor isect_ids = at::empty({M}, means2d.options().dtype(at::kLong));
    int32_t *fid = flatten_ids.data_ptr<int32_t>();
    int64_t *iid = isect_ids.data_ptr<int64_t>();
    {
        std::vector<int64_t> cursor(starts.begin(), starts.end() - 1);
        for (int64_t idx = 0; idx < I * N; ++idx) {
            if (tpg[idx] == 0) continue;
            const int64_t i = idx / N;
            const int32_t *r = &rect[4 * idx];
            for (int32_t y = r[1]; y < r[3]; ++y)
                for (int32_t x = r[0]; x < r[2]; ++x)
                    fid[cursor[i * TT + y * tile_w + x]++] = (int32_t)idx;
        }
    }

    int tile_bits = 0;
    while ((int64_t(1) << tile_bits) <= TT) ++tile_bits;
    const int nt = num_threads();
#pragma omp parallel num_threads(nt)
    {
        std::vector<std::pair<T, int32_t>> keys;
#pragma omp for schedule(dynamic, 16)
        for (int64_t t = 0; t < I * TT; ++t) {
            const int64_t s = starts[t], e = starts[t + 1];
            if (e - s > 1) {
                keys.resize(e - s);
                for (int64_t k = s; k < e; ++k) keys[k - s] = {dep[fid[k]], fid[k]};
                // (depth, flat id) pairs are unique, so this equals a stable sort
                std::sort(keys.begin(), keys.end());
                for (int64_t k = s; k < e; ++k) fid[k] = keys[k - s].second;
            }
            const int64_t i = t / TT, tile = t % TT;
            for (int64_t k = s; k < e; ++k) {
                const float d = (float)dep[fid[k]];
                uint32_t bits;
                std::memcpy(&bits, &d, sizeof(bits));
                iid[k] = (i << (32 + tile_bits)) | (tile << 32) | (int64_t)bits;
            }
        }
    }
    return {tiles_per_gauss, isect_offsets, flatten_ids, isect_ids};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bin_gaussians(
    const at::Tensor &means2d, const at::Tensor &radii, const at::Tensor &depths,
    int64_t tile_size, int64_t tile_w, int64_t tile_h
) {
    check_cpu_contig(means2d, "means2d");
    check_cpu_contig(radii, "radii");
    check_cpu_contig(depths, "depths");
    TORCH_CHECK(radii.scalar_type() == at::kInt, "radii must be int32");
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> out;
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "bin_gaussians", [&] {
        out = bin_impl<scalar_t>(means2d, radii, depths, tile_size, tile_w, tile_h);
    });
    return out;
}

// ---------------------------------------------------------------- forward

template <typename T, int CD>
void fwd_impl(
    const at::Tensor &means2d, const at::Tensor &conics, const at::Tensor &colors,
    const at::Tensor &opacities, const std::optional<at::Tensor> &background,
    const at::Tensor &radii, int64_t W, int64_t H, int64_t ts,
    const at::Tensor &isect_offsets, const at::Tensor &flatten_ids,
    at::Tensor &out_colors, at::Tensor &out_alphas, at::Tensor &last_ids
) {
    const int64_t I = means2d.size(0);
    const int D = CD > 0 ? CD : (int)colors.size(2);
    const int64_t th = isect_offsets.size(1), tw = isect_offsets.size(2);
    const int64_t n_tiles = I * th * tw;
    const int64_t M = flatten_ids.size(0);
    const T *m2 = means2d.data_ptr<T>(), *con = conics.data_ptr<T>();
    const T *col = colors.data_ptr<T>(), *opa = opacities.data_ptr<T>();
    const T *bg = background.has_value() ? background->data_ptr<T>() : nullptr;
    const int32_t *rad = radii.data_ptr<int32_t>();
    const int32_t *offs = isect_offsets.data_ptr<int32_t>();
    const int32_t *fid = flatten_ids.data_ptr<int32_t>();
    T *oc = out_colors.data_ptr<T>(), *oa = out_alphas.data_ptr<T>();
    int32_t *ol = last_ids.data_ptr<int32_t>();
    const T thr = T(1) / T(255), amax = T(0.999), tmin = T(1e-4);

    const int nt = num_threads();
#pragma omp parallel num_threads(nt)
    {
        std::vector<T> Tr(ts * ts), acc(ts * ts * D);
        std::vector<int32_t> last(ts * ts);
        std::vector<char> done(ts * ts);
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < n_tiles; ++tile) {
            const int64_t i = tile / (th * tw);
            const int64_t ty = (tile / tw) % th, tx = tile % tw;
            const int x0 = (int)(tx * ts), y0 = (int)(ty * ts);
            const int bw = (int)std::min<int64_t>(ts, W - x0);
            const int bh = (int)std::min<int64_t>(ts, H - y0);
            const int P = bw * bh;
            const int64_t start = offs[tile];
            const int64_t end = tile + 1 < n_tiles ? offs[tile + 1] : M;
            std::fill(Tr.begin(), Tr.begin() + P, T(1));
            std::fill(acc.begin(), acc.begin() + (int64_t)P * D, T(0));
            std::fill(last.begin(), last.begin() + P, (int32_t)(start - 1));
            std::fill(done.begin(), done.begin() + P, 0);
            int n_done = 0;
            Splat<T> s;
            for (int64_t k = start; k < end && n_done < P; ++k) {
                const int64_t g = fid[k];
                load_splat(s, g, m2, con, opa, rad, y0, bh);
                const T *c = col + g * D;
                for (int jy = s.jy0; jy < s.jy1; ++jy) {
                    const T dy = s.my - (T(y0 + jy) + T(0.5));
                    int jx0, jx1;
                    if (!row_span(s, y0 + jy + 0.5, x0, bw, &jx0, &jx1)) continue;
                    for (int jx = jx0; jx < jx1; ++jx) {
                        const int p = jy * bw + jx;
                        if (done[p]) continue;
                        const T dx = s.mx - (T(x0 + jx) + T(0.5));
                        const T sigma =
                            T(0.5) * (s.ca * dx * dx + s.cc * dy * dy) + s.cb * dx * dy;
                        if (sigma < T(0) || sigma > s.sig_cut) continue;
                        const T alpha = std::min(amax, s.op * std::exp(-sigma));
                        if (alpha < thr) continue;
                        const T next_T = Tr[p] * (T(1) - alpha);
                        if (next_T <= tmin) {
                            done[p] = 1;
                            ++n_done;
                            continue;
                        }
                        const T w = alpha * Tr[p];
                        T *a = &acc[(int64_t)p * D];
                        for (int d = 0; d < D; ++d) a[d] += c[d] * w;
                        Tr[p] = next_T;
                        last[p] = (int32_t)k;
                    }
                }
            }
            for (int jy = 0; jy < bh; ++jy) {
                for (int jx = 0; jx < bw; ++jx) {
                    const int p = jy * bw + jx;
                    const int64_t pix = (i * H + y0 + jy) * W + x0 + jx;
                    oa[pix] = T(1) - Tr[p];
                    ol[pix] = last[p];
                    for (int d = 0; d < D; ++d)
                        oc[pix * D + d] = acc[(int64_t)p * D + d] + (bg ? Tr[p] * bg[i * D + d] : T(0));
                }
            }
        }
    }
}

// Compile-time channel counts for the common cases (RGB, RGB + depth); every
// other count takes the runtime loop. Each extra case costs build time.
#define V3D_DISPATCH_CHANNELS(D, ...)                                                   \
    switch (D) {                                                                        \
    case 3: { constexpr int CD = 3; __VA_ARGS__(); break; }                            \
    case 4: { constexpr int CD = 4; __VA_ARGS__(); break; }                            \
    default: { constexpr int CD = -1; __VA_ARGS__(); break; }                          \
    }

std::tuple<at::Tensor, at::Tensor, at::Tensor> rasterize_fwd(
    const at::Tensor &means2d, const at::Tensor &conics, const at::Tensor &colors,
    const at::Tensor &opacities, const std::optional<at::Tensor> &background,
    const at::Tensor &radii, int64_t W, int64_t H, int64_t tile_size,
    const at::Tensor &isect_offsets, const at::Tensor &flatten_ids
) {
    for (auto *p : {&means2d, &conics, &colors, &opacities, &radii, &isect_offsets, &flatten_ids})
        check_cpu_contig(*p, "rasterize_fwd input");
    if (background.has_value()) check_cpu_contig(*background, "background");
    const int64_t I = means2d.size(0), D = colors.size(2);
    at::Tensor out_colors = at::empty({I, H, W, D}, colors.options());
    at::Tensor out_alphas = at::empty({I, H, W, 1}, colors.options());
    at::Tensor last_ids = at::empty({I, H, W}, colors.options().dtype(at::kInt));
    AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "rasterize_fwd", [&] {
        V3D_DISPATCH_CHANNELS(D, [&] {
            fwd_impl<scalar_t, CD>(means2d, conics, colors, opacities, background, radii, W, H,
                                   tile_size, isect_offsets, flatten_ids, out_colors,
                                   out_alphas, last_ids);
        });
    });
    return {out_colors, out_alphas, last_ids};
}

// ---------------------------------------------------------------- backward

template <typename T, int CD>
void bwd_impl(
    const at::Tensor &means2d, const at::Tensor &conics, const at::Tensor &colors,
    const at::Tensor &opacities, const std::optional<at::Tensor> &background,
    const at::Tensor &radii, int64_t W, int64_t H, int64_t ts,
    const at::Tensor &isect_offsets, const at::Tensor &flatten_ids,
    const at::Tensor &render_alphas, const at::Tensor &last_ids,
    const at::Tensor &v_render_colors, const at::Tensor &v_render_alphas, bool absgrad,
    at::Tensor &v_means2d, at::Tensor &v_conics, at::Tensor &v_colors,
    at::Tensor &v_opacities, at::Tensor &v_means2d_abs
) {
    const int64_t I = means2d.size(0), N = means2d.size(1);
    const int D = CD > 0 ? CD : (int)colors.size(2);
    const int64_t th = isect_offsets.size(1), tw = isect_offsets.size(2);
    const int64_t n_tiles = I * th * tw;
    const int64_t M = flatten_ids.size(0);
    const T *m2 = means2d.data_ptr<T>(), *con = conics.data_ptr<T>();
    const T *col = colors.data_ptr<T>(), *opa = opacities.data_ptr<T>();
    const T *bg = background.has_value() ? background->data_ptr<T>() : nullptr;
    const int32_t *rad = radii.data_ptr<int32_t>();
    const int32_t *offs = isect_offsets.data_ptr<int32_t>();
    const int32_t *fid = flatten_ids.data_ptr<int32_t>();
    const T *ra_out = render_alphas.data_ptr<T>();
    const int32_t *lid = last_ids.data_ptr<int32_t>();
    const T *vrc = v_render_colors.data_ptr<T>(), *vra = v_render_alphas.data_ptr<T>();
    const T thr = T(1) / T(255), amax = T(0.999);

    // per-intersection gradients: [mx, my, ca, cb, cc, op, (absx, absy), colors...]
    const int GA = absgrad ? 8 : 6;
    const int G = GA + D;
    std::vector<T> gis((size_t)M * G);

    const int nt = num_threads();
#pragma omp parallel num_threads(nt)
    {
        std::vector<T> Tr(ts * ts), Tf(ts * ts), buf(ts * ts * D), vc(ts * ts * D);
        std::vector<T> va(ts * ts), bgdot(ts * ts);
        std::vector<int32_t> last(ts * ts);
        std::vector<T> vcol(D);
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < n_tiles; ++tile) {
            const int64_t i = tile / (th * tw);
            const int64_t ty = (tile / tw) % th, tx = tile % tw;
            const int x0 = (int)(tx * ts), y0 = (int)(ty * ts);
            const int bw = (int)std::min<int64_t>(ts, W - x0);
            const int bh = (int)std::min<int64_t>(ts, H - y0);
            const int P = bw * bh;
            const int64_t start = offs[tile];
            const int64_t end = tile + 1 < n_tiles ? offs[tile + 1] : M;
            if (end <= start) continue;
            int64_t kmax = start - 1;
            for (int jy = 0; jy < bh; ++jy) {
                for (int jx = 0; jx < bw; ++jx) {
                    const int p = jy * bw + jx;
                    const int64_t pix = (i * H + y0 + jy) * W + x0 + jx;
                    Tf[p] = T(1) - ra_out[pix];
                    Tr[p] = Tf[p];
                    last[p] = lid[pix];
                    kmax = std::max<int64_t>(kmax, last[p]);
                    va[p] = vra[pix];
                    T bd = T(0);
                    for (int d = 0; d < D; ++d) {
                        vc[(int64_t)p * D + d] = vrc[pix * D + d];
                        buf[(int64_t)p * D + d] = T(0);
                        if (bg) bd += bg[i * D + d] * vrc[pix * D + d];
                    }
                    bgdot[p] = bd;
                }
            }
            // slots of Gaussians no pixel reached keep zero gradients
            std::fill(gis.begin() + (kmax + 1) * G, gis.begin() + end * G, T(0));
            Splat<T> s;
            for (int64_t k = kmax; k >= start; --k) {
                const int64_t g = fid[k];
                load_splat(s, g, m2, con, opa, rad, y0, bh);
                const T *c = col + g * D;
                T vmx = 0, vmy = 0, vca = 0, vcb = 0, vcc = 0, vop = 0, ax = 0, ay = 0;
                for (int d = 0; d < D; ++d) vcol[d] = T(0);
                for (int jy = s.jy0; jy < s.jy1; ++jy) {
                    const T dy = s.my - (T(y0 + jy) + T(0.5));
                    int jx0, jx1;
                    if (!row_span(s, y0 + jy + 0.5, x0, bw, &jx0, &jx1)) continue;
                    for (int jx = jx0; jx < jx1; ++jx) {
                        const int p = jy * bw + jx;
                        if (k > last[p]) continue;
                        const T dx = s.mx - (T(x0 + jx) + T(0.5));
                        const T sigma =
                            T(0.5) * (s.ca * dx * dx + s.cc * dy * dy) + s.cb * dx * dy;
                        if (sigma < T(0) || sigma > s.sig_cut) continue;
                        const T vis = std::exp(-sigma);
                        const T alpha = std::min(amax, s.op * vis);
                        if (alpha < thr) continue;
                        // undo this fragment's attenuation to recover T before it
                        const T ra = T(1) / (T(1) - alpha);
                        Tr[p] *= ra;
                        const T fac = alpha * Tr[p];
                        const T *vcp = &vc[(int64_t)p * D];
                        T *bp = &buf[(int64_t)p * D];
                        T v_alpha = T(0);
                        for (int d = 0; d < D; ++d) {
                            vcol[d] += fac * vcp[d];
                            v_alpha += (c[d] * Tr[p] - bp[d] * ra) * vcp[d];
                            bp[d] += c[d] * fac;
                        }
                        v_alpha += Tf[p] * ra * (va[p] - bgdot[p]);
                        // the 0.999 clamp is flat: no gradient to sigma/opacity there
                        if (s.op * vis <= amax) {
                            const T v_sigma = -s.op * vis * v_alpha;
                            vca += T(0.5) * v_sigma * dx * dx;
                            vcb += v_sigma * dx * dy;
                            vcc += T(0.5) * v_sigma * dy * dy;
                            const T gx = v_sigma * (s.ca * dx + s.cb * dy);
                            const T gy = v_sigma * (s.cb * dx + s.cc * dy);
                            vmx += gx;
                            vmy += gy;
                            ax += std::abs(gx);
                            ay += std::abs(gy);
                            vop += vis * v_alpha;
                        }
                    }
                }
                T *o = &gis[(size_t)k * G];
                o[0] = vmx; o[1] = vmy; o[2] = vca; o[3] = vcb; o[4] = vcc; o[5] = vop;
                if (absgrad) { o[6] = ax; o[7] = ay; }
                for (int d = 0; d < D; ++d) o[GA + d] = vcol[d];
            }
        }
    }

    // Deterministic reduction per Gaussian, split by image so images run in
    // parallel without write conflicts (a flat id belongs to one image).
    T *vm = v_means2d.data_ptr<T>(), *vcn = v_conics.data_ptr<T>();
    T *vcl = v_colors.data_ptr<T>(), *vo = v_opacities.data_ptr<T>();
    T *vabs = absgrad ? v_means2d_abs.data_ptr<T>() : nullptr;
    at::parallel_for(0, I, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const int64_t s0 = offs[i * th * tw];
            const int64_t s1 = i + 1 < I ? offs[(i + 1) * th * tw] : M;
            for (int64_t k = s0; k < s1; ++k) {
                const int64_t g = fid[k];
                const T *o = &gis[(size_t)k * G];
                vm[2 * g] += o[0];
                vm[2 * g + 1] += o[1];
                vcn[3 * g] += o[2];
                vcn[3 * g + 1] += o[3];
                vcn[3 * g + 2] += o[4];
                vo[g] += o[5];
                if (vabs) {
                    vabs[2 * g] += o[6];
                    vabs[2 * g + 1] += o[7];
                }
                for (int d = 0; d < D; ++d) vcl[g * D + d] += o[GA + d];
            }
        }
    });
    (void)N;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rasterize_bwd(
    const at::Tensor &means2d, const at::Tensor &conics, const at::Tensor &colors,
    const at::Tensor &opacities, const std::optional<at::Tensor> &background,
    const at::Tensor &radii, int64_t W, int64_t H, int64_t tile_size,
    const at::Tensor &isect_offsets, const at::Tensor &flatten_ids,
    const at::Tensor &render_alphas, const at::Tensor &last_ids,
    const at::Tensor &v_render_colors, const at::Tensor &v_render_alphas, bool absgrad
) {
    for (auto *p : {&means2d, &conics, &colors, &opacities, &radii, &isect_offsets,
                    &flatten_ids, &render_alphas, &last_ids, &v_render_colors, &v_render_alphas})
        check_cpu_contig(*p, "rasterize_bwd input");
    if (background.has_value()) check_cpu_contig(*background, "background");
    at::Tensor v_means2d = at::zeros(means2d.sizes(), means2d.options());
    at::Tensor v_conics = at::zeros(conics.sizes(), conics.options());
    at::Tensor v_colors = at::zeros(colors.sizes(), colors.options());
    at::Tensor v_opacities = at::zeros(opacities.sizes(), opacities.options());
    at::Tensor v_abs = absgrad ? at::zeros(means2d.sizes(), means2d.options())
                               : at::empty({0}, means2d.options());
    const int64_t D = colors.size(2);
    AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "rasterize_bwd", [&] {
        V3D_DISPATCH_CHANNELS(D, [&] {
            bwd_impl<scalar_t, CD>(means2d, conics, colors, opacities, background, radii, W, H,
                                   tile_size, isect_offsets, flatten_ids, render_alphas,
                                   last_ids, v_render_colors, v_render_alphas, absgrad,
                                   v_means2d, v_conics, v_colors, v_opacities, v_abs);
        });
    });
    return {v_means2d, v_conics, v_colors, v_opacities, v_abs};
}

}  // namespace

TORCH_LIBRARY(vision3d_gs_cpu, m) {
    m.def("project_fwd(Tensor means, Tensor quats, Tensor scales, Tensor opacities, "
          "Tensor viewmats, Tensor Ks, int width, int height, float near, float far, "
          "float eps2d, float radius_clip, bool antialiased) "
          "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
          &project_fwd);
    m.def("project_bwd(Tensor means, Tensor quats, Tensor scales, Tensor viewmats, Tensor Ks, "
          "int width, int height, float eps2d, Tensor radii, Tensor comps, Tensor v_means2d, "
          "Tensor v_depths, Tensor v_conics, Tensor? v_comps, bool need_viewmat_grad) "
          "-> (Tensor, Tensor, Tensor, Tensor)",
          &project_bwd);
    m.def("bin_gaussians(Tensor means2d, Tensor radii, Tensor depths, int tile_size, "
          "int tile_width, int tile_height) -> (Tensor, Tensor, Tensor, Tensor)",
          &bin_gaussians);
    m.def("rasterize_fwd(Tensor means2d, Tensor conics, Tensor colors, Tensor opacities, "
          "Tensor? background, Tensor radii, int width, int height, int tile_size, "
          "Tensor isect_offsets, Tensor flatten_ids) -> (Tensor, Tensor, Tensor)",
          &rasterize_fwd);
    m.def("rasterize_bwd(Tensor means2d, Tensor conics, Tensor colors, Tensor opacities, "
          "Tensor? background, Tensor radii, int width, int height, int tile_size, "
          "Tensor isect_offsets, Tensor flatten_ids, Tensor render_alphas, Tensor last_ids, "
          "Tensor v_render_colors, Tensor v_render_alphas, bool absgrad) "
          "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
          &rasterize_bwd);
}
