"""The permutohedral lattice (Adams, Baek and Davis 2010): Gaussian filtering in d feature dimensions
in time linear in the pixels, the way Krähenbühl and Koltun run their fully connected CRF.

Each pixel's feature vector (its position and colour divided by the kernel's standard deviations) is
lifted onto the hyperplane of the (d+1)-dimensional lattice and lies in one simplex, whose d+1
vertices get its value with its barycentric weights (splat); the vertices' values are blurred with
[1/2, 1, 1/2] along each of the d+1 lattice directions in turn; each pixel reads back the weighted
sum of its simplex's vertices (slice), times Adams et al.'s constant 1 / (1 + 2^-d). The embedding,
the rounding to the nearest remainder-0 point, the ranking (ties included), the barycentric weights,
the blur's order and the constant are those of the authors' code behind pydensecrf, so the same
vertices and the same sums come out, up to float rounding (tests/test_crf.py holds one mean-field
step to 1e-5 of pydensecrf2's where it is installed).

Vertices are numbered in the order pixels first reach them, as pydensecrf's hash table numbers them,
so a pixel's vertices sit near each other in memory. Neighbours along each direction are found by
sorting the vertices' keys, packed into one integer (a mixed radix over the key's coordinates, in
64 bits where they fit, else 128), and merging the sorted keys with themselves shifted by the
direction's step: linear passes, where a hash table probes at random. The splat is gathered per
vertex (its pixels listed by a counting sort), so threads never write to the same vertex. A blur
step where most vertices have a neighbour is one pass over all of them into a second buffer; where
few have (a random-colour image at θβ = 3: 36% per direction), only those are computed, aside, and
written back.

Hand-written, in C++ (:data:`SOURCE`, compiled on first use by
``torch.utils.cpp_extension.load_inline``, about 30 to 150 s, cached by torch afterwards): no
library on this machine has a lattice that runs on several threads: pydensecrf2's is the authors'
single-threaded code, whose setup alone takes 2 s of its 5.5 s for DeepLab's 10 iterations on a
500×500 random-colour image; and the same lattice written with torch's operators (``index_add_``,
``index_select`` with ``index_copy_``, CSR ``sparse.mm``) spent 1 to 4 s per iteration on that image
in scattered row copies (measured for this module, the machine loaded). Here the splat, each blur
step and the slice are loops over vertices or pixels split between torch's intra-op threads, each
inner loop over all the classes at once (padded to a multiple of 8, unrolled for 8 to 32).

Measured on one thread (``time.process_time``, DeepLab v1's settings, 21 classes, 500×500): the
random-colour image's bilateral lattice (1.48 M vertices) builds in 0.43-0.48 s and filters in
0.18 s; a photograph's (0.43 M vertices) in 0.16-0.23 s and 0.077 s; the 2-D smoothness lattice in
0.02-0.04 s and 0.011 s. The filter is bound by memory traffic. Not done: on the random-colour image
97% of the vertices lie in small islands of the lattice (components of at most 64 vertices) that
could be filtered whole in cache, but on the photograph 3% do, so it would speed up the benchmark's
worst case and not photographs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from papers.errors import PapersError

if TYPE_CHECKING:
    import torch

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

static inline uint64_t fold(int64_t code) { return (uint64_t)code; }
static inline uint64_t fold(__int128 code) { return (uint64_t)code ^ (uint64_t)(code >> 64); }

// The vertices of the points' keys (coord, N(d+1) x d), packed with the radix of the spans into Key.
template <typename Key>
std::vector<torch::Tensor> index_vertices(const int32_t* coord, int64_t N, int64_t d,
                                          const std::vector<int64_t>& low, const std::vector<int64_t>& span,
                                          torch::Tensor vertex_t, torch::Tensor weight_t) {
  const int64_t D1 = d + 1;
  const float* weight = weight_t.data_ptr<float>();
  std::vector<Key> radix(d);
  Key place = 1;
  for (int64_t i = 0; i < d; ++i) {
    radix[i] = place;
    place *= span[i];
  }
  auto pack = [&](const int32_t* key) {
    Key code = 0;
    for (int64_t i = 0; i < d; ++i) code += (Key)(key[i] - low[i]) * radix[i];
    return code;
  };
  std::vector<Key> slot_code(N * D1);
  at::parallel_for(0, N * D1, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t s = lo; s < hi; ++s) slot_code[s] = pack(coord + s * d);
  });

  // Number the vertices in the order the points reach them (open addressing on the packed keys).
  uint64_t capacity = 16;
  while (capacity < 2 * (uint64_t)(N * D1)) capacity <<= 1;
  std::vector<int32_t> table(capacity, -1);
  std::vector<Key> vertex_code;
  vertex_code.reserve(N * D1);
  int32_t* vertex = vertex_t.data_ptr<int32_t>();
  for (int64_t s = 0; s < N * D1; ++s) {
    const Key code = slot_code[s];
    uint64_t h = fold(code);
    h = (h ^ (h >> 31)) * 0x9E3779B97F4A7C15ULL;
    for (uint64_t at = h & (capacity - 1);; at = (at + 1) & (capacity - 1)) {
      if (table[at] < 0) {
        table[at] = (int32_t)vertex_code.size();
        vertex_code.push_back(code);
      }
      if (vertex_code[table[at]] == code) {
        vertex[s] = table[at];
        break;
      }
    }
  }
  const int64_t M = vertex_code.size();
  TORCH_CHECK(M < INT32_MAX, "too many lattice vertices");

  // Neighbours: the keys sorted, merged with themselves shifted by each direction's step (the
  // targets rise with the keys, so one forward pass finds them all).
  struct Entry { Key code; int32_t id; };
  std::vector<Entry> sorted(M);
  for (int64_t v = 0; v < M; ++v) sorted[v] = {vertex_code[v], (int32_t)v};
  std::sort(sorted.begin(), sorted.end(), [](const Entry& a, const Entry& b) { return a.code < b.code; });
  std::vector<int32_t> found(2 * D1 * M, (int32_t)M);
  at::parallel_for(0, 2 * D1, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t j = row / 2;
      Key step = 0;  // direction j: +d on coordinate j, -1 on the others (the (d+1)th is implied)
      for (int64_t i = 0; i < d; ++i) step += (i == j ? (Key)d : (Key)(-1)) * radix[i];
      if (row % 2) step = -step;
      int32_t* out = found.data() + row * M;
      int64_t q = 0;
      for (int64_t p = 0; p < M; ++p) {
        const Key target = sorted[p].code + step;
        while (q < M && sorted[q].code < target) ++q;
        if (q < M && sorted[q].code == target) out[sorted[p].id] = sorted[q].id;
      }
    }
  });
  // Per direction, only the vertices with a neighbour along it: (vertex, forward, back) rows, from
  // blur_start[j] on; a vertex without one keeps its value, which the blur then leaves in place.
  auto blur_start_t = torch::zeros({D1 + 1}, torch::kInt64);
  int64_t* blur_start = blur_start_t.data_ptr<int64_t>();
  for (int64_t j = 0; j < D1; ++j) {
    const int32_t* forward = found.data() + 2 * j * M;
    const int32_t* back = forward + M;
    int64_t count = 0;
    for (int64_t v = 0; v < M; ++v) count += (forward[v] < M || back[v] < M);
    blur_start[j + 1] = blur_start[j] + count;
  }
  auto blur_t = torch::empty({blur_start[D1], 3}, torch::kInt32);
  int32_t* blur = blur_t.data_ptr<int32_t>();
  for (int64_t j = 0; j < D1; ++j) {
    const int32_t* forward = found.data() + 2 * j * M;
    const int32_t* back = forward + M;
    int32_t* row = blur + 3 * blur_start[j];
    for (int64_t v = 0; v < M; ++v)
      if (forward[v] < M || back[v] < M) {
        row[0] = (int32_t)v; row[1] = forward[v]; row[2] = back[v];
        row += 3;
      }
  }

  // Each vertex's (point, weight) pairs, in point order (a counting sort).
  auto start_t = torch::zeros({M + 1}, torch::kInt64);
  auto point_t = torch::empty({N * D1}, torch::kInt32);
  auto point_weight_t = torch::empty({N * D1}, torch::kFloat32);
  int64_t* start = start_t.data_ptr<int64_t>();
  int32_t* point = point_t.data_ptr<int32_t>();
  float* point_weight = point_weight_t.data_ptr<float>();
  for (int64_t s = 0; s < N * D1; ++s) start[vertex[s] + 1]++;
  for (int64_t v = 0; v < M; ++v) start[v + 1] += start[v];
  std::vector<int64_t> fill(start, start + M);
  for (int64_t s = 0; s < N * D1; ++s) {
    const int64_t e = fill[vertex[s]]++;
    point[e] = (int32_t)(s / D1);
    point_weight[e] = weight[s];
  }
  return {vertex_t, weight_t, blur_t, blur_start_t, start_t, point_t, point_weight_t};
}

// The lattice of N points with d features each (N x d, float32, divided by the standard deviations).
// Gives: vertex (N x d+1, int32), each point's simplex; weight (N x d+1, float32), its barycentric
// weights; blur (rows x 3, int32) and blur_start (d+2, int64), per direction the vertices with a
// neighbour along it, ascending; splat_start (M+1, int64), splat_point (N(d+1), int32) and
// splat_weight (N(d+1), float32): the points that reach each vertex and their weights, in point order.
std::vector<torch::Tensor> lattice_build(torch::Tensor features) {
  TORCH_CHECK(features.dim() == 2 && features.scalar_type() == torch::kFloat32, "features are N x d float32");
  features = features.contiguous();
  const int64_t N = features.size(0), d = features.size(1), D1 = d + 1;
  const float* f = features.data_ptr<float>();
  auto vertex_t = torch::empty({N, D1}, torch::kInt32);
  auto weight_t = torch::empty({N, D1}, torch::kFloat32);
  auto coord_t = torch::empty({N * D1, d}, torch::kInt32);
  float* weight = weight_t.data_ptr<float>();
  int32_t* coord = coord_t.data_ptr<int32_t>();
  const float inv_std_dev = std::sqrt(2.0 / 3.0) * D1;  // float, then double, as the authors' code
  std::vector<float> scale(d);
  for (int64_t i = 0; i < d; ++i) scale[i] = 1.0 / std::sqrt(double((i + 1) * (i + 2))) * inv_std_dev;

  at::parallel_for(0, N, 4096, [&](int64_t lo, int64_t hi) {
    std::vector<float> elevated(D1), bary(D1 + 1);
    std::vector<int32_t> rem0(D1), rank(D1);
    for (int64_t k = lo; k < hi; ++k) {
      const float* fk = f + k * d;
      float sum_cf = 0;  // lift onto the hyperplane (Adams et al. 2010, p. 5)
      for (int64_t j = d; j > 0; --j) {
        const float cf = fk[j - 1] * scale[j - 1];
        elevated[j] = sum_cf - j * cf;
        sum_cf += cf;
      }
      elevated[0] = sum_cf;
      const float down_factor = 1.0f / D1;
      int32_t sum = 0;  // the nearest remainder-0 point, coordinate by coordinate
      for (int64_t i = 0; i < D1; ++i) {
        const float v = down_factor * elevated[i];
        const float up = std::ceil(v) * D1, down = std::floor(v) * D1;
        rem0[i] = (int32_t)(up - elevated[i] < elevated[i] - down ? up : down);
        sum += rem0[i] / (int32_t)D1;
      }
      std::fill(rank.begin(), rank.end(), 0);  // the simplex: the order of the differences
      for (int64_t i = 0; i < d; ++i) {
        const double di = elevated[i] - rem0[i];
        for (int64_t j = i + 1; j < D1; ++j) {
          if (di < elevated[j] - rem0[j]) rank[i]++;
          else rank[j]++;
        }
      }
      for (int64_t i = 0; i < D1; ++i) {  // back onto the plane where the coordinates do not sum to 0
        rank[i] += sum;
        if (rank[i] < 0) { rank[i] += D1; rem0[i] += D1; }
        else if (rank[i] > d) { rank[i] -= D1; rem0[i] -= D1; }
      }
      std::fill(bary.begin(), bary.end(), 0.0f);  // barycentric weights (p. 10)
      for (int64_t i = 0; i < D1; ++i) {
        const float v = (elevated[i] - rem0[i]) * down_factor;
        bary[d - rank[i]] += v;
        bary[d - rank[i] + 1] -= v;
      }
      bary[0] += 1.0f + bary[D1];
      for (int64_t r = 0; r < D1; ++r) {
        weight[k * D1 + r] = bary[r];
        int32_t* key = coord + (k * D1 + r) * d;
        for (int64_t i = 0; i < d; ++i) key[i] = rem0[i] + (rank[i] <= d - r ? r : r - D1);
      }
    }
  });

  // Pack each key into one integer; the margin keeps a neighbour's key (one step of at most d per
  // coordinate) from wrapping onto another's.
  std::vector<int64_t> low(d, INT32_MAX), high(d, INT32_MIN);
  for (int64_t s = 0; s < N * D1; ++s)
    for (int64_t i = 0; i < d; ++i) {
      low[i] = std::min<int64_t>(low[i], coord[s * d + i]);
      high[i] = std::max<int64_t>(high[i], coord[s * d + i]);
    }
  double bits = 0;
  std::vector<int64_t> span(d);
  for (int64_t i = 0; i < d; ++i) {
    low[i] -= D1;
    span[i] = N ? high[i] + D1 - low[i] + 1 : 1;
    bits += std::log2((double)span[i]);
  }
  if (bits < 62) return index_vertices<int64_t>(coord, N, d, low, span, vertex_t, weight_t);
  TORCH_CHECK(bits < 125, "the lattice's keys span more than 125 bits: ",
              "the kernel's standard deviations are too small for these features");
  return index_vertices<__int128>(coord, N, d, low, span, vertex_t, weight_t);
}

// out (+)= scale * the lattice's Gaussian filter of values (N x C, float32, C a multiple of 8):
// splat, blur, slice. buffer and spare are (M+1) x C float32 whose last row stays zero (the missing
// neighbour). W is C where it is 8, 16, 24 or 32 (loops the compiler unrolls), else 0.
template <int W>
void filter(int64_t N, int64_t C, int64_t D1, int64_t M, const float* __restrict__ in,
            float* __restrict__ result, float alpha, bool accumulate, const int32_t* vertex,
            const float* weight, const int32_t* blur,
            const int64_t* blur_start, const int64_t* start, const int32_t* point, const float* point_weight,
            float* lattice, float* next) {
  const int64_t width = W ? W : C;
  at::parallel_for(0, M, 2048, [&](int64_t lo, int64_t hi) {
    for (int64_t v = lo; v < hi; ++v) {
      float* __restrict__ dst = lattice + v * width;
      for (int64_t c = 0; c < width; ++c) dst[c] = 0.0f;
      for (int64_t e = start[v]; e < start[v + 1]; ++e) {
        const float w = point_weight[e];
        const float* __restrict__ src = in + (int64_t)point[e] * width;
        for (int64_t c = 0; c < width; ++c) dst[c] += w * src[c];
      }
    }
  });
  for (int64_t j = 0; j < D1; ++j) {
    const int32_t* rows = blur + 3 * blur_start[j];
    const int64_t count = blur_start[j + 1] - blur_start[j];
    if (3 * count > 2 * M) {  // most vertices move: one pass over all into the spare buffer
      at::parallel_for(0, M, 2048, [&](int64_t lo, int64_t hi) {
        int64_t k = 0, past = count;  // the first listed vertex at or after lo (they ascend)
        while (k < past) {
          const int64_t middle = (k + past) / 2;
          if (rows[3 * middle] < lo) k = middle + 1;
          else past = middle;
        }
        for (int64_t v = lo; v < hi; ++v) {
          const float* __restrict__ self = lattice + v * width;
          float* __restrict__ dst = next + v * width;
          if (k < count && rows[3 * k] == v) {
            const float* a = lattice + (int64_t)rows[3 * k + 1] * width;
            const float* b = lattice + (int64_t)rows[3 * k + 2] * width;
            for (int64_t c = 0; c < width; ++c) dst[c] = self[c] + 0.5f * (a[c] + b[c]);
            ++k;
          } else {
            for (int64_t c = 0; c < width; ++c) dst[c] = self[c];
          }
        }
      });
      std::swap(lattice, next);
    } else {  // few move: their new values aside, then written back in place
      at::parallel_for(0, count, 2048, [&](int64_t lo, int64_t hi) {
        for (int64_t k = lo; k < hi; ++k) {
          const float* self = lattice + (int64_t)rows[3 * k] * width;
          const float* a = lattice + (int64_t)rows[3 * k + 1] * width;
          const float* b = lattice + (int64_t)rows[3 * k + 2] * width;
          float* __restrict__ dst = next + k * width;
          for (int64_t c = 0; c < width; ++c) dst[c] = self[c] + 0.5f * (a[c] + b[c]);
        }
      });
      at::parallel_for(0, count, 2048, [&](int64_t lo, int64_t hi) {
        for (int64_t k = lo; k < hi; ++k) {
          float* __restrict__ dst = lattice + (int64_t)rows[3 * k] * width;
          const float* __restrict__ src = next + k * width;
          for (int64_t c = 0; c < width; ++c) dst[c] = src[c];
        }
      });
    }
  }
  at::parallel_for(0, N, 1024, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float* __restrict__ dst = result + i * width;
      if (!accumulate)
        for (int64_t c = 0; c < width; ++c) dst[c] = 0.0f;
      for (int64_t r = 0; r < D1; ++r) {
        const float w = alpha * weight[i * D1 + r];
        const float* __restrict__ src = lattice + (int64_t)vertex[i * D1 + r] * width;
        for (int64_t c = 0; c < width; ++c) dst[c] += w * src[c];
      }
    }
  });
}

void lattice_filter(torch::Tensor values, torch::Tensor out, double scale, bool accumulate,
                    torch::Tensor vertex, torch::Tensor weight, torch::Tensor blur, torch::Tensor blur_start,
                    torch::Tensor start, torch::Tensor point, torch::Tensor point_weight,
                    torch::Tensor buffer, torch::Tensor spare) {
  const int64_t N = values.size(0), C = values.size(1), D1 = vertex.size(1), M = start.size(0) - 1;
  TORCH_CHECK(values.is_contiguous() && out.is_contiguous() && C % 8 == 0 && out.size(1) == C);
  TORCH_CHECK(buffer.size(0) == M + 1 && buffer.size(1) == C && spare.size(1) == C);
  const int64_t* blur_start_p = blur_start.data_ptr<int64_t>();
  for (int64_t j = 0; j < D1; ++j) {  // the spare rows each direction's blur writes (see filter)
    const int64_t count = blur_start_p[j + 1] - blur_start_p[j];
    TORCH_CHECK(spare.size(0) >= (3 * count > 2 * M ? M + 1 : count), "the spare buffer is too short");
  }
  const float alpha = (float)(scale / (1.0 + std::pow(2.0, -(double)(D1 - 1))));  // Adams et al.'s constant
  auto run = [&](auto width) {
    filter<decltype(width)::value>(N, C, D1, M, values.data_ptr<float>(), out.data_ptr<float>(), alpha,
                                   accumulate, vertex.data_ptr<int32_t>(), weight.data_ptr<float>(),
                                   blur.data_ptr<int32_t>(), blur_start.data_ptr<int64_t>(),
                                   start.data_ptr<int64_t>(), point.data_ptr<int32_t>(),
                                   point_weight.data_ptr<float>(), buffer.data_ptr<float>(),
                                   spare.data_ptr<float>());
  };
  switch (C) {
    case 8: run(std::integral_constant<int, 8>()); break;
    case 16: run(std::integral_constant<int, 16>()); break;
    case 24: run(std::integral_constant<int, 24>()); break;
    case 32: run(std::integral_constant<int, 32>()); break;
    default: run(std::integral_constant<int, 0>());
  }
}
"""
"""The lattice's C++: its construction and its filter (splat, blur, slice) over torch's threads."""

_NATIVE: list = []


def native() -> object:
    """The compiled extension (compiled on first use, then cached by torch); a
    :class:`~papers.errors.PapersError` saying why where it cannot be built."""
    if not _NATIVE:
        from torch.utils.cpp_extension import load_inline

        try:
            _NATIVE.append(
                load_inline(
                    "papers_permutohedral_lattice",
                    cpp_sources=SOURCE,
                    functions=["lattice_build", "lattice_filter"],
                    extra_cflags=["-O3", "-march=native"],
                )
            )
        except Exception as exc:  # the compiler's or ninja's failure, whatever it raises
            raise PapersError(f"the permutohedral lattice (C++) cannot be built here: {exc}") from None
    return _NATIVE[0]


class Lattice:
    """The lattice of N points' features (N × d, already divided by the standard deviations), built
    once; :meth:`filter` then applies its Gaussian to any N × C values."""

    def __init__(self, features: torch.Tensor) -> None:
        import torch

        if features.dim() != 2 or features.shape[1] < 1:
            raise PapersError(f"the lattice takes N × d features, not {tuple(features.shape)}")
        features = features.to(torch.float32).contiguous()
        dims = features.shape[1]
        largest = float(features.abs().max()) if features.numel() else 0.0
        if not largest * 2 * dims * (dims + 1) < 2**30:  # the keys are 32-bit; NaN fails too
            raise PapersError(
                f"the lattice's features reach {largest:.3g} standard deviations: too far for its "
                "32-bit keys (the kernel's standard deviations are too small for these features)"
            )
        try:
            built = native().lattice_build(features)  # type: ignore[attr-defined]
        except RuntimeError as error:  # the C++ checks' messages, without torch's trace
            raise PapersError(str(error).splitlines()[0]) from None
        self._vertex, self._weight, *self._blur, self._start, self._point, self._point_weight = built
        self.points = int(self._vertex.shape[0])
        self.vertices = int(self._start.shape[0]) - 1
        """M, the number of lattice vertices the points reach."""
        self._buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        moving = self._blur[1].diff()  # per direction, the vertices the blur moves
        full = bool((3 * moving > 2 * self.vertices).any())  # one pass over all, into a whole copy
        self._spare_rows = self.vertices + 1 if full else max(int(moving.max()), 1)

    def filter(
        self, values: torch.Tensor, out: torch.Tensor | None = None, scale: float = 1.0
    ) -> torch.Tensor:
        """``scale`` × the Gaussian of ``values`` (N × C), approximated on the lattice; added to ``out``
        (N × C float32, contiguous) where given, else returned in a new tensor. Runs fastest with C a
        multiple of 8 (the classes padded with zeros), which the filter otherwise pads itself."""
        import torch
        import torch.nn.functional as F

        if values.dim() != 2 or values.shape[0] != self.points:
            raise PapersError(f"the lattice filters {self.points} × C values, not {tuple(values.shape)}")
        channels = values.shape[1]
        width = -(-channels // 8) * 8
        values = F.pad(values.to(torch.float32), (0, width - channels)).contiguous()
        direct = out is not None and channels == width and out.dtype == torch.float32 and out.is_contiguous()
        target = out if direct else torch.zeros_like(values)
        if width not in self._buffers:  # kept: fresh memory costs more than the filter's reads
            self._buffers[width] = (
                torch.zeros(self.vertices + 1, width),
                torch.zeros(self._spare_rows, width),
            )
        native().lattice_filter(  # type: ignore[attr-defined]
            values,
            target,
            scale,
            direct,
            self._vertex,
            self._weight,
            *self._blur,
            self._start,
            self._point,
            self._point_weight,
            *self._buffers[width],
        )
        if direct:
            return target
        if out is None:
            return target[:, :channels].contiguous()
        out += target[:, :channels]
        return out
