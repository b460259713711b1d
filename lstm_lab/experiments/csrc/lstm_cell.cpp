// One LSTM step's elementwise work, forward and backward, each as a single loop: the C++ half of the
// `cpp` rung (lstm_lab/ladder.py, chapter 3).  The matrix products stay in Python; everything between them
// happens here, in one pass over the batch, instead of a dozen PyTorch operators that each read and write
// whole tensors and pay Python's and the dispatcher's few microseconds.
//
// Shapes: B rows (the batch), H hidden units; gate tensors are (B, 4H) with the gates in nn.LSTM's order
// i, f, g, o.  Every tensor must be contiguous, on the CPU, and of one dtype (float32 or float64).
// The equations and names are chapter 2's.
//
// Built by torch.utils.cpp_extension (see `ladder.cpp_cell`) with -O3 -ffast-math: fast-math lets the
// compiler call a vectorised exp (glibc's libmvec), which is what makes these loops fast.
#include <torch/extension.h>

#include <cmath>

namespace {

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  return scalar_t(1) / (scalar_t(1) + std::exp(-x));
}

template <typename scalar_t>
inline scalar_t tanh_by_sigmoid(scalar_t x) {  // tanh(x) = 2 sigmoid(2x) - 1, as ladder.tanh
  return scalar_t(2) * sigmoid(scalar_t(2) * x) - scalar_t(1);
}

// One batch row of the forward step.  `__restrict` (a compiler extension, not standard C++) promises that no
// two pointers overlap, so the compiler may use vector instructions: 8 floats of a row at a time with AVX2,
// 16 with AVX-512.
template <typename scalar_t>
void forward_row(int64_t H, const scalar_t* __restrict wh, const scalar_t* __restrict a_x,
                 const scalar_t* __restrict c_prev, scalar_t* __restrict acts, scalar_t* __restrict c,
                 scalar_t* __restrict h, scalar_t* __restrict tanh_c) {
  for (int64_t j = 0; j < H; ++j) {
    // a = W_hh h_{t-1} + (W_ih x_t + b): the product from Python plus the hoisted input projection
    const scalar_t i = sigmoid(wh[j] + a_x[j]);
    const scalar_t f = sigmoid(wh[H + j] + a_x[H + j]);
    const scalar_t g = tanh_by_sigmoid(wh[2 * H + j] + a_x[2 * H + j]);
    const scalar_t o = sigmoid(wh[3 * H + j] + a_x[3 * H + j]);
    const scalar_t c_t = f * c_prev[j] + i * g;  // c_t = f c_{t-1} + i g
    const scalar_t tanh_c_t = tanh_by_sigmoid(c_t);
    acts[j] = i, acts[H + j] = f, acts[2 * H + j] = g, acts[3 * H + j] = o;  // kept for the backward step
    c[j] = c_t;
    tanh_c[j] = tanh_c_t;
    h[j] = o * tanh_c_t;  // h_t = o tanh(c_t)
  }
}

// One batch row of the backward step (chapter 2's BPTT step without its product).
//   in:  dh_next = dL/dh_t through step t+1 (da_{t+1} W_hh), dh_out = dL/dh_t through the output,
//        dc = dL/dc_t through step t+1 (dc_{t+1} f_{t+1})
//   out: da = dL/da_t for the four gates;  dc overwritten with dL/dc_{t-1} = dc_t f_t
template <typename scalar_t>
void backward_row(int64_t H, const scalar_t* __restrict dh_next, const scalar_t* __restrict dh_out,
                  const scalar_t* __restrict acts, const scalar_t* __restrict c_prev,
                  const scalar_t* __restrict tanh_c, scalar_t* __restrict dc, scalar_t* __restrict da) {
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t i = acts[j], f = acts[H + j], g = acts[2 * H + j], o = acts[3 * H + j];
    const scalar_t dh = dh_out[j] + dh_next[j];  // h_t feeds both the output and the next step
    const scalar_t dc_t = dc[j] + dh * o * (scalar_t(1) - tanh_c[j] * tanh_c[j]);  // tanh' = 1 - tanh^2
    da[j] = dc_t * g * i * (scalar_t(1) - i);                   // sigmoid' = s (1 - s)
    da[H + j] = dc_t * c_prev[j] * f * (scalar_t(1) - f);
    da[2 * H + j] = dc_t * i * (scalar_t(1) - g * g);
    da[3 * H + j] = dh * tanh_c[j] * o * (scalar_t(1) - o);
    dc[j] = dc_t * f;  // the forget gate is the only path back to c_{t-1}
  }
}

// Refuse a tensor the loops cannot read as a plain (rows, cols) array of `like`'s dtype.  (Whether two
// tensors overlap in memory is not checked: the Python side passes distinct tensors.)
void check(const torch::Tensor& t, const char* name, const torch::Tensor& like, int64_t rows, int64_t cols) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == like.scalar_type() && t.is_contiguous() && t.dim() == 2 &&
                  t.size(0) == rows && t.size(1) == cols,
              "lstm_cell: expected ", name, " to be a contiguous CPU ", like.scalar_type(), " tensor of shape (",
              rows, ", ", cols, "), got ", t.scalar_type(), " ", t.sizes(), t.is_contiguous() ? "" : " (not contiguous)",
              " on ", t.device());
}

}  // namespace

// wh (B, 4H), a_x (B, 4H), c_prev (B, H) in; acts (B, 4H), c, h, tanh_c (B, H) written.
void forward_step(const torch::Tensor& wh, const torch::Tensor& a_x, const torch::Tensor& c_prev,
                  torch::Tensor& acts, torch::Tensor& c, torch::Tensor& h, torch::Tensor& tanh_c) {
  TORCH_CHECK(c_prev.dim() == 2, "lstm_cell: expected c_prev of shape (B, H), got ", c_prev.sizes());
  TORCH_CHECK(c_prev.scalar_type() == torch::kFloat || c_prev.scalar_type() == torch::kDouble,
              "lstm_cell: expected float32 or float64 tensors, got ", c_prev.scalar_type());
  const int64_t B = c_prev.size(0), H = c_prev.size(1);
  check(wh, "wh", c_prev, B, 4 * H), check(a_x, "a_x", c_prev, B, 4 * H), check(c_prev, "c_prev", c_prev, B, H);
  check(acts, "acts", c_prev, B, 4 * H), check(c, "c", c_prev, B, H), check(h, "h", c_prev, B, H);
  check(tanh_c, "tanh_c", c_prev, B, H);
  AT_DISPATCH_FLOATING_TYPES(c_prev.scalar_type(), "forward_step", [&] {
    for (int64_t b = 0; b < B; ++b)
      forward_row<scalar_t>(H, wh.data_ptr<scalar_t>() + b * 4 * H, a_x.data_ptr<scalar_t>() + b * 4 * H,
                            c_prev.data_ptr<scalar_t>() + b * H, acts.data_ptr<scalar_t>() + b * 4 * H,
                            c.data_ptr<scalar_t>() + b * H, h.data_ptr<scalar_t>() + b * H,
                            tanh_c.data_ptr<scalar_t>() + b * H);
  });
}

// dh_next, dh_out (B, H), acts (B, 4H), c_prev, tanh_c (B, H) in; dc (B, H) read and overwritten; da (B, 4H) written.
void backward_step(const torch::Tensor& dh_next, const torch::Tensor& dh_out, torch::Tensor& dc,
                   const torch::Tensor& acts, const torch::Tensor& c_prev, const torch::Tensor& tanh_c,
                   torch::Tensor& da) {
  TORCH_CHECK(dc.dim() == 2, "lstm_cell: expected dc of shape (B, H), got ", dc.sizes());
  TORCH_CHECK(dc.scalar_type() == torch::kFloat || dc.scalar_type() == torch::kDouble,
              "lstm_cell: expected float32 or float64 tensors, got ", dc.scalar_type());
  const int64_t B = dc.size(0), H = dc.size(1);
  check(dh_next, "dh_next", dc, B, H), check(dh_out, "dh_out", dc, B, H), check(dc, "dc", dc, B, H);
  check(acts, "acts", dc, B, 4 * H), check(c_prev, "c_prev", dc, B, H), check(tanh_c, "tanh_c", dc, B, H);
  check(da, "da", dc, B, 4 * H);
  AT_DISPATCH_FLOATING_TYPES(dc.scalar_type(), "backward_step", [&] {
    for (int64_t b = 0; b < B; ++b)
      backward_row<scalar_t>(H, dh_next.data_ptr<scalar_t>() + b * H, dh_out.data_ptr<scalar_t>() + b * H,
                             acts.data_ptr<scalar_t>() + b * 4 * H, c_prev.data_ptr<scalar_t>() + b * H,
                             tanh_c.data_ptr<scalar_t>() + b * H, dc.data_ptr<scalar_t>() + b * H,
                             da.data_ptr<scalar_t>() + b * 4 * H);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_step", &forward_step, "one LSTM step's elementwise forward work (see lstm_cell.cpp)");
  m.def("backward_step", &backward_step, "one LSTM step's elementwise backward work (see lstm_cell.cpp)");
}
