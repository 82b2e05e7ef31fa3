// CPU kernels of the sparse-voxel renderer (SVRaster model), forward and backward.
//
// Same rules as the torch reference (vision3d/backend/svraster/reference.py), which is
// the oracle of this file (tests/backend/test_svraster_cpp.py):
//   * candidates: each voxel pairs with the pixels of its projected bounding box (widened by
//     0.05 px; a voxel straddling the near plane pairs with every pixel, one wholly behind
//     it with none: no ray with t >= near can reach it because t is camera z);
//   * per pixel: slab test (same guard for |d| < 1e-12), segments clipped to t >= near, kept
//     when t1 > t0, sorted by (t0, voxel id) as the reference's two stable sorts;
//   * K midpoint samples per segment: trilinear raw density (voxel-local coordinates clamped
//     to [0, 1]), exp_linear_11, tau = sigma * length / K, composited front to back with the
//     optical depth summed in double; colour from SH at the ray direction,
//     max(SH + 0.5, 0); normal = -normalize(trilinear gradient);
//   * outputs: rgb = sum w c + (1 - acc) bg, acc = sum w, depth = sum w t / acc (0 when
//     acc <= 1e-6), normal = sum w n, each voxel's largest blend weight, and optionally
//     front = sum of w over samples with t < limit[pixel] (opacity in front of a given depth);
//   * optional early stop once the transmittance drops below min_transmittance (0: never,
//     the reference's behaviour).
//
// Work layout: OpenMP over blocks of pixels (rows of the image); the backward recomputes
// each pixel's samples, walks them back to front, and accumulates the gradients of corner
// densities and SH into per-thread buffers reduced at the end (deterministic for a given
// thread count, no atomics).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

namespace {

int num_threads() { return std::max<int>(1, at::get_num_threads()); }

void check_cpu_contig(const at::Tensor &t, const char *name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// ----------------------------------------------------------------- binning

// Candidate voxels per pixel: offsets [R + 1] (int64) and voxel ids (int32), each pixel's
// list in increasing voxel id.
constexpr double kEps = 0.05;  // pixels

std::tuple<at::Tensor, at::Tensor> bin_voxels(const at::Tensor &w2c_t, const at::Tensor &K_t, int64_t W,
                                              int64_t H, const at::Tensor &centers_t, const at::Tensor &sizes_t,
                                              double near) {
    const at::Tensor w2c = w2c_t.to(at::kDouble).contiguous(), Kd = K_t.to(at::kDouble).contiguous();
    const at::Tensor cen = centers_t.to(at::kDouble).contiguous(), siz = sizes_t.to(at::kDouble).contiguous();
    const double *M = w2c.data_ptr<double>(), *K = Kd.data_ptr<double>();
    const double *c = cen.data_ptr<double>(), *s = siz.data_ptr<double>();
    const int64_t N = cen.size(0), R = W * H;
    std::vector<int32_t> box(N * 4);  // u0, u1, v0, v1 (half-open)
    at::parallel_for(0, N, 4096, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            double umin = 1e300, umax = -1e300, vmin = 1e300, vmax = -1e300;
            bool front = true, any_front = false;
            for (int k = 0; k < 8; ++k) {
                const double p[3] = {c[3 * i] + (((k >> 0) & 1) - 0.5) * s[i],
                                     c[3 * i + 1] + (((k >> 1) & 1) - 0.5) * s[i],
                                     c[3 * i + 2] + (((k >> 2) & 1) - 0.5) * s[i]};
                double q[3];
                for (int r = 0; r < 3; ++r) q[r] = M[4 * r] * p[0] + M[4 * r + 1] * p[1] + M[4 * r + 2] * p[2] + M[4 * r + 3];
                if (q[2] > near) {
                    any_front = true;
                    const double x = q[0] / q[2], y = q[1] / q[2];
                    const double u = K[0] * x + K[1] * y + K[2], v = K[3] * x + K[4] * y + K[5];
                    umin = std::min(umin, u); umax = std::max(umax, u);
                    vmin = std::min(vmin, v); vmax = std::max(vmax, v);
                } else {
                    front = false;
                }
            }
            int32_t *bx = &box[4 * i];
            if (!any_front) {
                bx[0] = bx[1] = bx[2] = bx[3] = 0;
            } else if (!front) {
                bx[0] = 0; bx[1] = (int32_t)W; bx[2] = 0; bx[3] = (int32_t)H;
            } else {
                auto cl = [](double x, int64_t hi) { return (int32_t)std::min<double>(std::max<double>(x, 0.0), (double)hi); };
                // pixel u (centre u + 0.5) can see the box only if umin <= u + 0.5 <= umax; kEps
                // pixels of slack cover the rounding of the rays (float32: ~1e-4 px at 1000 px)
                bx[0] = cl(std::ceil(umin - 0.5 - kEps), W); bx[1] = cl(std::floor(umax - 0.5 + kEps) + 1, W);
                bx[2] = cl(std::ceil(vmin - 0.5 - kEps), H); bx[3] = cl(std::floor(vmax - 0.5 + kEps) + 1, H);
            }
        }
    });
    at::Tensor offsets = at::zeros({R + 1}, at::TensorOptions().dtype(at::kLong));
    int64_t *off = offsets.data_ptr<int64_t>();
    for (int64_t i = 0; i < N; ++i) {
        const int32_t *bx = &box[4 * i];
        for (int32_t v = bx[2]; v < bx[3]; ++v)
            for (int32_t u = bx[0]; u < bx[1]; ++u) ++off[v * W + u + 1];
    }
    for (int64_t r = 0; r < R; ++r) off[r + 1] += off[r];
    at::Tensor ids = at::empty({off[R]}, at::TensorOptions().dtype(at::kInt));
    int32_t *id = ids.data_ptr<int32_t>();
    std::vector<int64_t> cur(off, off + R);
    for (int64_t i = 0; i < N; ++i) {
        const int32_t *bx = &box[4 * i];
        for (int32_t v = bx[2]; v < bx[3]; ++v)
            for (int32_t u = bx[0]; u < bx[1]; ++u) id[cur[v * W + u]++] = (int32_t)i;
    }
    return {offsets, ids};
}

// ------------------------------------------------------------- shared math

template <typename T> struct Seg {
    T t0, t1;
    int32_t vox;
};

template <typename T> struct Scene {
    double org[3], M[9];  // camera centre; M = R_c2w K^-1 (pixel (u, v, 1) -> ray direction)
    int64_t W;
    const T *c, *s, *dens, *sh, *bg;
    const int64_t *off;
    const int32_t *ids;
    int64_t N, B, K;
    T near;
    double min_T;
    const T *limit;  // [R] per-pixel t limit of the "front" output, or nullptr
};

// Ray of pixel r through its centre (u + 0.5, v + 0.5); the direction has unit camera z, so t
// is camera depth (the reference's camera_rays, evaluated in double).
template <typename T> inline void pixel_ray(const Scene<T> &S, int64_t r, T o[3], T d[3]) {
    const double u = double(r % S.W) + 0.5, v = double(r / S.W) + 0.5;
    for (int a = 0; a < 3; ++a) {
        o[a] = (T)S.org[a];
        d[a] = (T)(S.M[3 * a] * u + S.M[3 * a + 1] * v + S.M[3 * a + 2]);
    }
}

// The pixel's segments, sorted by (t0, voxel id).
template <typename T>
void pixel_segments(const Scene<T> &S, int64_t r, const T *o, const T *d, std::vector<Seg<T>> &segs) {
    segs.clear();
    T inv[3];
    for (int a = 0; a < 3; ++a) inv[a] = T(1) / (std::abs(d[a]) < T(1e-12) ? T(1e-12) : d[a]);
    for (int64_t q = S.off[r]; q < S.off[r + 1]; ++q) {
        const int32_t v = S.ids[q];
        const T half = S.s[v] / T(2);
        T t0 = -INFINITY, t1 = INFINITY;
        for (int a = 0; a < 3; ++a) {
            const T lo = S.c[3 * v + a] - half, hi = S.c[3 * v + a] + half;
            const T ta = (lo - o[a]) * inv[a], tb = (hi - o[a]) * inv[a];
            t0 = std::max(t0, std::min(ta, tb));
            t1 = std::min(t1, std::max(ta, tb));
        }
        t0 = std::max(t0, S.near);
        if (t1 > t0) segs.push_back({t0, t1, v});
    }
    std::sort(segs.begin(), segs.end(), [](const Seg<T> &a, const Seg<T> &b) {
        return a.t0 < b.t0 || (a.t0 == b.t0 && a.vox < b.vox);
    });
}

// Real SH basis (Sloan / 3DGS order) at the normalised direction; returns the count.
template <typename T> int sh_basis(const T *dir, int64_t B, T *out) {
    const T n = std::max(std::sqrt(dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]), T(1e-12));
    const T x = dir[0] / n, y = dir[1] / n, z = dir[2] / n;
    out[0] = T(0.28209479177387814);
    if (B >= 4) {
        const T a = T(0.48860251190292);
        out[1] = -a * y; out[2] = a * z; out[3] = -a * x;
    }
    if (B >= 9) {
        const T z2 = z * z, tb = T(-1.092548430592079) * z, c1 = x * x - y * y, s1 = T(2) * x * y;
        out[4] = T(0.5462742152960395) * s1; out[5] = tb * y;
        out[6] = T(0.9461746957575601) * z2 - T(0.3153915652525201); out[7] = tb * x;
        out[8] = T(0.5462742152960395) * c1;
        if (B >= 16) {
            const T tc = T(-2.285228997322329) * z2 + T(0.4570457994644658), tb3 = T(1.445305721320277) * z;
            const T c2 = x * c1 - y * s1, s2 = x * s1 + y * c1;
            out[9] = T(-0.5900435899266435) * s2; out[10] = tb3 * s1; out[11] = tc * y;
            out[12] = z * (T(1.865881662950577) * z2 - T(1.119528997770346)); out[13] = tc * x;
            out[14] = tb3 * c1; out[15] = T(-0.5900435899266435) * c2;
        }
    }
    return (int)B;
}

// One sample: voxel-local position, trilinear weights, raw density and the (unnormalised)
// world-space gradient of the trilinear field.
// The ray of pixel r, its voxel segments in depth order, its SH basis; returns |d|. The backward
// pass replays the forward's ray walk, so both start here.
template <typename T>
inline T begin_ray(const Scene<T> &S, int64_t r, T o[3], T d[3], std::vector<Seg<T>> &segs, T *basis) {
    pixel_ray(S, r, o, d);
    pixel_segments(S, r, o, d, segs);
    sh_basis(d, S.B, basis);
    return std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
}

template <typename T> struct Sample {
    T local[3], tw[8], raw, grad[3];
};

template <typename T> inline void eval_sample(const Scene<T> &S, const T *o, const T *d, int32_t v, T t, Sample<T> &sm) {
    const T size = S.s[v];
    for (int a = 0; a < 3; ++a) {
        const T lo = S.c[3 * v + a] - size / T(2);
        const T l = (o[a] + d[a] * t - lo) / size;
        sm.local[a] = std::min(std::max(l, T(0)), T(1));
    }
    const T *cd = S.dens + 8 * v;
    T raw = 0, g[3] = {0, 0, 0};
    for (int k = 0; k < 8; ++k) {
        T w[3];
        for (int a = 0; a < 3; ++a) w[a] = ((k >> a) & 1) ? sm.local[a] : T(1) - sm.local[a];
        sm.tw[k] = w[0] * w[1] * w[2];
        raw += sm.tw[k] * cd[k];
        g[0] += (((k >> 0) & 1) ? T(1) : T(-1)) * w[1] * w[2] * cd[k];
        g[1] += (((k >> 1) & 1) ? T(1) : T(-1)) * w[0] * w[2] * cd[k];
        g[2] += (((k >> 2) & 1) ? T(1) : T(-1)) * w[0] * w[1] * cd[k];
    }
    sm.raw = raw;
    for (int a = 0; a < 3; ++a) sm.grad[a] = g[a] / size;
}

template <typename T> inline T exp_linear_11(T x) {
    return x > T(1.1) ? x : std::exp(T(0.909090909090909) * std::min(x, T(1.1)) - T(0.9046898039520122));
}

template <typename T> inline T exp_linear_11_grad(T x) {
    return x > T(1.1) ? T(1) : T(0.909090909090909) * std::exp(T(0.909090909090909) * x - T(0.9046898039520122));
}

template <typename T> inline void seg_color(const Scene<T> &S, int32_t v, const T *basis, T col[3], T raw[3]) {
    const T *co = S.sh + v * S.B * 3;
    for (int ch = 0; ch < 3; ++ch) {
        T x = 0;
        for (int64_t b = 0; b < S.B; ++b) x += basis[b] * co[3 * b + ch];
        raw[ch] = x + T(0.5);
        col[ch] = std::max(raw[ch], T(0));
    }
}

// ----------------------------------------------------------------- forward

template <typename T>
void forward_impl(const Scene<T> &S, int64_t R, T *rgb, T *depth, T *alpha, T *normal, T *front, T *vw,
                  int64_t *nseg) {
    const int nt = num_threads();
    std::vector<T> vw_t((size_t)nt * S.N, T(0));
    std::vector<int64_t> segs_t(nt, 0);
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num();
        T *my_vw = &vw_t[(size_t)tid * S.N];
        std::vector<Seg<T>> segs;
        T basis[16];
        Sample<T> sm;
#pragma omp for schedule(dynamic, 64)
        for (int64_t r = 0; r < R; ++r) {
            T o[3], d[3];
            const T dnorm = begin_ray(S, r, o, d, segs, basis);
            segs_t[tid] += (int64_t)segs.size();
            double od = 0.0;  // optical depth so far
            T acc = 0, ds = 0, fr = 0, col_acc[3] = {0, 0, 0}, n_acc[3] = {0, 0, 0};
            const T lim = S.limit ? S.limit[r] : T(0);
            bool stop = false;
            for (const Seg<T> &sg : segs) {
                T col[3], craw[3];
                seg_color(S, sg.vox, basis, col, craw);
                const T len = (sg.t1 - sg.t0) * dnorm / T(S.K);
                for (int64_t k = 0; k < S.K; ++k) {
                    const T t = sg.t0 + (sg.t1 - sg.t0) * ((T(k) + T(0.5)) / T(S.K));
                    eval_sample(S, o, d, sg.vox, t, sm);
                    const T tau = exp_linear_11(sm.raw) * len;
                    const T a = T(1) - std::exp(-tau);
                    const T w = T(std::exp(-od)) * a;
                    od += (double)tau;
                    acc += w;
                    ds += w * t;
                    if (t < lim) fr += w;
                    const T gn = std::max(std::sqrt(sm.grad[0] * sm.grad[0] + sm.grad[1] * sm.grad[1] + sm.grad[2] * sm.grad[2]), T(1e-12));
                    for (int ch = 0; ch < 3; ++ch) {
                        col_acc[ch] += w * col[ch];
                        n_acc[ch] -= w * sm.grad[ch] / gn;
                    }
                    my_vw[sg.vox] = std::max(my_vw[sg.vox], w);
                    if (S.min_T > 0.0 && std::exp(-od) < S.min_T) { stop = true; break; }
                }
                if (stop) break;
            }
            for (int ch = 0; ch < 3; ++ch) {
                rgb[3 * r + ch] = col_acc[ch] + (T(1) - acc) * S.bg[ch];
                normal[3 * r + ch] = n_acc[ch];
            }
            alpha[r] = acc;
            front[r] = fr;
            depth[r] = acc > T(1e-6) ? ds / acc : T(0);
        }
    }
    at::parallel_for(0, S.N, 8192, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            T m = 0;
            for (int t = 0; t < nt; ++t) m = std::max(m, vw_t[(size_t)t * S.N + i]);
            vw[i] = m;
        }
    });
    int64_t total = 0;
    for (int t = 0; t < nt; ++t) total += segs_t[t];
    *nseg = total;
}

template <typename T>
Scene<T> make_scene(const at::Tensor &cam, int64_t W, const at::Tensor &c, const at::Tensor &s,
                    const at::Tensor &dens, const at::Tensor &sh, const at::Tensor &bg, const at::Tensor &off,
                    const at::Tensor &ids, int64_t samples, double near, double min_T,
                    const std::optional<at::Tensor> &limit) {
    Scene<T> S{{0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0, 0}, W, c.data_ptr<T>(), s.data_ptr<T>(), dens.data_ptr<T>(),
               sh.data_ptr<T>(), bg.data_ptr<T>(), off.data_ptr<int64_t>(), ids.data_ptr<int32_t>(),
               dens.size(0), sh.size(1), samples, (T)near, min_T,
               limit.has_value() ? limit->data_ptr<T>() : nullptr};
    const double *cp = cam.data_ptr<double>();  // [3, 4]: M | origin
    for (int a = 0; a < 3; ++a) {
        S.org[a] = cp[4 * a + 3];
        for (int b = 0; b < 3; ++b) S.M[3 * a + b] = cp[4 * a + b];
    }
    return S;
}

void check_inputs(const at::Tensor &cam, const at::Tensor &c, const at::Tensor &s, const at::Tensor &dens,
                  const at::Tensor &sh, const at::Tensor &bg) {
    check_cpu_contig(cam, "camera");
    TORCH_CHECK(cam.scalar_type() == at::kDouble && cam.numel() == 12, "camera must be float64 [3, 4]");
    const at::Tensor *ts[] = {&c, &s, &dens, &sh, &bg};
    const char *names[] = {"centers", "sizes", "densities", "sh", "background"};
    for (int i = 0; i < 5; ++i) {
        check_cpu_contig(*ts[i], names[i]);
        TORCH_CHECK(ts[i]->scalar_type() == dens.scalar_type(), names[i], " must have the densities' dtype");
    }
    const int64_t N = dens.size(0);
    TORCH_CHECK(dens.dim() == 2 && dens.size(1) == 8, "densities must be [N, 8]");
    TORCH_CHECK(c.dim() == 2 && c.size(0) == N && c.size(1) == 3, "centers must be [N, 3]");
    TORCH_CHECK(s.dim() == 1 && s.size(0) == N, "sizes must be [N]");
    TORCH_CHECK(sh.dim() == 3 && sh.size(0) == N && sh.size(2) == 3, "sh must be [N, B, 3]");
    const int64_t B = sh.size(1);
    TORCH_CHECK(B == 1 || B == 4 || B == 9 || B == 16, "sh: B must be 1, 4, 9 or 16");
    TORCH_CHECK(bg.numel() == 3, "background must be [3]");
}

void check_limit(const std::optional<at::Tensor> &limit, const at::Tensor &dens, int64_t R) {
    if (!limit.has_value()) return;
    check_cpu_contig(*limit, "limit");
    TORCH_CHECK(limit->scalar_type() == dens.scalar_type() && limit->numel() == R,
                "limit must be [H * W] with the densities' dtype");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, int64_t>
render_fwd(const at::Tensor &cam, int64_t W, int64_t H, const at::Tensor &c, const at::Tensor &s,
           const at::Tensor &dens, const at::Tensor &sh, const at::Tensor &bg, const at::Tensor &off,
           const at::Tensor &ids, int64_t samples, double near, double min_T,
           const std::optional<at::Tensor> &limit) {
    check_inputs(cam, c, s, dens, sh, bg);
    check_limit(limit, dens, W * H);
    const int64_t R = W * H, N = dens.size(0);
    TORCH_CHECK(off.numel() == R + 1, "offsets must be [R + 1]");
    auto opt = dens.options();
    at::Tensor rgb = at::empty({R, 3}, opt), depth = at::empty({R, 1}, opt), alpha = at::empty({R, 1}, opt);
    at::Tensor normal = at::empty({R, 3}, opt), front = at::empty({R, 1}, opt), vw = at::empty({N}, opt);
    int64_t nseg = 0;
    AT_DISPATCH_FLOATING_TYPES(dens.scalar_type(), "svraster_render_fwd", [&] {
        Scene<scalar_t> S = make_scene<scalar_t>(cam, W, c, s, dens, sh, bg, off, ids, samples, near, min_T, limit);
        forward_impl<scalar_t>(S, R, rgb.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(),
                               normal.data_ptr<scalar_t>(), front.data_ptr<scalar_t>(), vw.data_ptr<scalar_t>(),
                               &nseg);
    });
    return {rgb, depth, alpha, normal, front, vw, nseg};
}

// ---------------------------------------------------------------- backward

template <typename T> struct Rec {
    int32_t vox;
    T tau, t, w, T_before, len, s_dot;  // s_dot: upstream gradient . sample features
    Sample<T> sm;
    T col_raw[3];
};

template <typename T>
void backward_impl(const Scene<T> &S, int64_t R, const T *g_rgb, const T *g_depth, const T *g_alpha,
                   const T *g_normal, const T *g_front, const T *alpha_out, const T *depth_out, T *g_dens,
                   T *g_sh) {
    const int nt = num_threads();
    const int64_t nd = S.N * 8, ns = S.N * S.B * 3;
    std::vector<T> gd_t((size_t)nt * nd, T(0)), gs_t((size_t)nt * ns, T(0));
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num();
        T *gd = &gd_t[(size_t)tid * nd], *gs = &gs_t[(size_t)tid * ns];
        std::vector<Seg<T>> segs;
        std::vector<Rec<T>> recs;
        T basis[16];
#pragma omp for schedule(dynamic, 64)
        for (int64_t r = 0; r < R; ++r) {
            const T *gc = g_rgb + 3 * r, *gnrm = g_normal + 3 * r;
            const T acc = alpha_out[r];
            // rgb = sum w c + (1 - acc) bg; depth = dsum / acc (acc > 1e-6)
            T gA = g_alpha[r] - (gc[0] * S.bg[0] + gc[1] * S.bg[1] + gc[2] * S.bg[2]);
            T gD = 0;
            if (acc > T(1e-6)) {
                gD = g_depth[r] / acc;
                gA -= g_depth[r] * depth_out[r] / acc;  // d(dsum/acc)/dacc = -depth / acc
            }
            const T gF = S.limit ? g_front[r] : T(0), lim = S.limit ? S.limit[r] : T(0);
            if (gc[0] == 0 && gc[1] == 0 && gc[2] == 0 && gA == 0 && gD == 0 && gF == 0 && gnrm[0] == 0 &&
                gnrm[1] == 0 && gnrm[2] == 0)
                continue;
            T o[3], d[3];
            const T dnorm = begin_ray(S, r, o, d, segs, basis);
            recs.clear();
            double od = 0.0;
            bool stop = false;
            for (const Seg<T> &sg : segs) {
                T col[3], craw[3];
                seg_color(S, sg.vox, basis, col, craw);
                const T len = (sg.t1 - sg.t0) * dnorm / T(S.K);
                for (int64_t k = 0; k < S.K; ++k) {
                    Rec<T> rc;
                    rc.vox = sg.vox;
                    rc.t = sg.t0 + (sg.t1 - sg.t0) * ((T(k) + T(0.5)) / T(S.K));
                    eval_sample(S, o, d, sg.vox, rc.t, rc.sm);
                    rc.len = len;
                    rc.tau = exp_linear_11(rc.sm.raw) * len;
                    rc.T_before = T(std::exp(-od));
                    rc.w = rc.T_before * (T(1) - std::exp(-rc.tau));
                    od += (double)rc.tau;
                    const T gn = std::max(std::sqrt(rc.sm.grad[0] * rc.sm.grad[0] + rc.sm.grad[1] * rc.sm.grad[1] +
                                                    rc.sm.grad[2] * rc.sm.grad[2]), T(1e-12));
                    rc.s_dot = gc[0] * col[0] + gc[1] * col[1] + gc[2] * col[2] + gA + gD * rc.t -
                               (gnrm[0] * rc.sm.grad[0] + gnrm[1] * rc.sm.grad[1] + gnrm[2] * rc.sm.grad[2]) / gn;
                    if (rc.t < lim) rc.s_dot += gF;
                    for (int ch = 0; ch < 3; ++ch) rc.col_raw[ch] = craw[ch];
                    recs.push_back(rc);
                    if (S.min_T > 0.0 && std::exp(-od) < S.min_T) { stop = true; break; }
                }
                if (stop) break;
            }
            T suffix = 0;  // sum over later samples of w_j s_j
            for (int64_t i = (int64_t)recs.size() - 1; i >= 0; --i) {
                const Rec<T> &rc = recs[i];
                const int32_t v = rc.vox;
                // d L / d tau_i = s_i T_i exp(-tau_i) - sum_{j > i} w_j s_j
                const T g_tau = rc.s_dot * rc.T_before * std::exp(-rc.tau) - suffix;
                suffix += rc.w * rc.s_dot;
                const T g_raw = g_tau * rc.len * exp_linear_11_grad(rc.sm.raw);
                T *gdv = gd + 8 * v;
                for (int k = 0; k < 8; ++k) gdv[k] += g_raw * rc.sm.tw[k];
                // normal n = -g / |g|: dL/dg = -(gN / |g| - g (g . gN) / |g|^3), gN = w * g_normal
                const T *g = rc.sm.grad;
                const T gl = std::sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2]);
                if (gl > T(1e-12) && (gnrm[0] != 0 || gnrm[1] != 0 || gnrm[2] != 0)) {
                    const T dotg = (g[0] * gnrm[0] + g[1] * gnrm[1] + g[2] * gnrm[2]) / (gl * gl * gl);
                    T dg[3];
                    for (int a = 0; a < 3; ++a) dg[a] = -rc.w * (gnrm[a] / gl - g[a] * dotg);
                    const T size = S.s[v];
                    const T *l = rc.sm.local;
                    for (int k = 0; k < 8; ++k) {
                        T w3[3];
                        for (int a = 0; a < 3; ++a) w3[a] = ((k >> a) & 1) ? l[a] : T(1) - l[a];
                        const T sx = ((k >> 0) & 1) ? T(1) : T(-1), sy = ((k >> 1) & 1) ? T(1) : T(-1),
                                sz = ((k >> 2) & 1) ? T(1) : T(-1);
                        gdv[k] += (dg[0] * sx * w3[1] * w3[2] + dg[1] * sy * w3[0] * w3[2] + dg[2] * sz * w3[0] * w3[1]) / size;
                    }
                }
                // colour: d rgb / d c_i = w_i; clamp_min(x, 0) passes where x >= 0
                T *gsv = gs + v * S.B * 3;
                for (int ch = 0; ch < 3; ++ch) {
                    if (rc.col_raw[ch] < T(0) || gc[ch] == 0) continue;
                    const T gcol = rc.w * gc[ch];
                    for (int64_t b = 0; b < S.B; ++b) gsv[3 * b + ch] += gcol * basis[b];
                }
            }
        }
    }
    at::parallel_for(0, nd, 16384, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            T x = 0;
            for (int t = 0; t < nt; ++t) x += gd_t[(size_t)t * nd + i];
            g_dens[i] = x;
        }
    });
    at::parallel_for(0, ns, 16384, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            T x = 0;
            for (int t = 0; t < nt; ++t) x += gs_t[(size_t)t * ns + i];
            g_sh[i] = x;
        }
    });
}

std::tuple<at::Tensor, at::Tensor>
render_bwd(const at::Tensor &cam, int64_t W, int64_t H, const at::Tensor &c, const at::Tensor &s,
           const at::Tensor &dens, const at::Tensor &sh, const at::Tensor &bg, const at::Tensor &off,
           const at::Tensor &ids, int64_t samples, double near, double min_T, const std::optional<at::Tensor> &limit,
           const at::Tensor &alpha, const at::Tensor &depth, const at::Tensor &g_rgb, const at::Tensor &g_depth,
           const at::Tensor &g_alpha, const at::Tensor &g_normal, const at::Tensor &g_front) {
    check_inputs(cam, c, s, dens, sh, bg);
    check_limit(limit, dens, W * H);
    TORCH_CHECK(off.numel() == W * H + 1, "offsets must be [W * H + 1]");
    const at::Tensor *ts[] = {&alpha, &depth, &g_rgb, &g_depth, &g_alpha, &g_normal, &g_front};
    for (auto *t : ts) {
        check_cpu_contig(*t, "render_bwd input");
        TORCH_CHECK(t->scalar_type() == dens.scalar_type(), "render_bwd: gradients must have the densities' dtype");
    }
    const int64_t R = W * H;
    at::Tensor gd = at::empty(dens.sizes(), dens.options()), gs = at::empty(sh.sizes(), sh.options());
    AT_DISPATCH_FLOATING_TYPES(dens.scalar_type(), "svraster_render_bwd", [&] {
        Scene<scalar_t> S = make_scene<scalar_t>(cam, W, c, s, dens, sh, bg, off, ids, samples, near, min_T, limit);
        backward_impl<scalar_t>(S, R, g_rgb.data_ptr<scalar_t>(), g_depth.data_ptr<scalar_t>(),
                                g_alpha.data_ptr<scalar_t>(), g_normal.data_ptr<scalar_t>(), g_front.data_ptr<scalar_t>(),
                                alpha.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(), gd.data_ptr<scalar_t>(),
                                gs.data_ptr<scalar_t>());
    });
    return {gd, gs};
}

}  // namespace

TORCH_LIBRARY(vision3d_svraster_cpu, m) {
    m.def("bin_voxels(Tensor world_to_cam, Tensor K, int width, int height, Tensor centers, Tensor sizes, "
          "float near) -> (Tensor, Tensor)",
          &bin_voxels);
    m.def("render_fwd(Tensor camera, int width, int height, Tensor centers, Tensor sizes, Tensor densities, Tensor sh, "
          "Tensor background, Tensor offsets, Tensor ids, int samples, float near, float min_transmittance, "
          "Tensor? limit) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int)",
          &render_fwd);
    m.def("render_bwd(Tensor camera, int width, int height, Tensor centers, Tensor sizes, Tensor densities, Tensor sh, "
          "Tensor background, Tensor offsets, Tensor ids, int samples, float near, float min_transmittance, "
          "Tensor? limit, Tensor alpha, Tensor depth, Tensor g_rgb, Tensor g_depth, Tensor g_alpha, Tensor g_normal, "
          "Tensor g_front) "
          "-> (Tensor, Tensor)",
          &render_bwd);
}
