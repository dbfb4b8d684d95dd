// cnncli's optional oneDNN convolutions, as XLA FFI custom calls (CPU only).
//
// Three handlers, one per pass of a channels-last convolution:
//   cnncli_onednn_conv_fwd          y  = conv(x, w)
//   cnncli_onednn_conv_bwd_data     dx = conv_backward_data(dy, w)
//   cnncli_onednn_conv_bwd_weights  dw = conv_backward_weights(x, dy)
// and two for BatchNorm under the same backend (not oneDNN: a loop of our own, below):
//   cnncli_channel_sums             (sum(a), sum(a * b)) per channel
//   cnncli_channel_sums_relu        the same where b * mult + shift > 0
// Layouts are JAX's: activations (N, *spatial, C), kernels (*spatial, C_in / groups,
// C_out), 1 to 3 spatial axes, float32 or bfloat16. The Python side
// (cnncli/native/onednn.py) builds this file with g++, registers the handlers and
// wraps them in a jax.custom_vjp that is tested against lax.conv_general_dilated.
//
// Attributes (all int64 arrays of length = spatial rank, except `groups`):
//   strides, pad_lo, pad_hi, dilation (lax's rhs_dilation: 1 = dense), groups.
//
// Each distinct problem (pass, shapes, dtypes, attributes) builds its oneDNN
// primitives once and keeps them: the kernel for `format_tag::any` weights (blocked
// on AVX-512), the reorders between JAX's plain kernel layout and that blocked one,
// the blocked copy itself and the scratch memory (see Attr).
//
// Which kernel: oneDNN lists every implementation that can run a problem, best
// guess first, and uses the first. On its first call cnncli times the listed ones
// (not the reference ones) on the call's own buffers and keeps oneDNN's first pick
// unless another is at least 10% faster (see Choose; LeNet-5's second convolution's
// backward-data: 1.25 ms for oneDNN's first pick, 0.72 ms for another). The choice is
// recorded in a file (cnncli_onednn_configure; one per CPU, oneDNN version and thread
// count), so a later process on this machine runs the same kernels without timing
// again: the same results bit for bit.

#include <fcntl.h>
#include <omp.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine = [] {
    // cnncli keeps its own primitives (Plan). oneDNN's cache of primitives would also
    // hand an earlier implementation back to the descriptor list, whose next_impl()
    // then repeats it: Choose could not time the others.
    dnnl::set_primitive_cache_capacity(0);
    return dnnl::engine(dnnl::engine::kind::cpu, 0);
  }();
  return engine;
}

// One oneDNN call at a time: XLA may run independent thunks on several threads,
// and each oneDNN call already uses every core through its own OpenMP team.
std::mutex& CallMutex() {
  static std::mutex mu;
  return mu;
}

ffi::Error DataType(ffi::DataType t, memory::data_type* out) {
  switch (t) {
    case ffi::DataType::F32: *out = memory::data_type::f32; return ffi::Error::Success();
    case ffi::DataType::BF16: *out = memory::data_type::bf16; return ffi::Error::Success();
    default: return ffi::Error::InvalidArgument("cnncli oneDNN conv: only float32 and bfloat16");
  }
}

// oneDNN logical dims of a channels-last activation (N, *S, C) -> {N, C, *S} with the
// strides of the row-major (N, *S, C) buffer.
memory::desc ActivationDesc(ffi::Span<const int64_t> d, memory::data_type dt) {
  const int64_t r = static_cast<int64_t>(d.size());
  memory::dims dims(r), strides(r);
  std::vector<int64_t> rm(r);  // row-major strides of the JAX buffer
  rm[r - 1] = 1;
  for (int64_t i = r - 2; i >= 0; --i) rm[i] = rm[i + 1] * d[i + 1];
  dims[0] = d[0]; strides[0] = rm[0];
  dims[1] = d[r - 1]; strides[1] = rm[r - 1];
  for (int64_t i = 1; i < r - 1; ++i) { dims[i + 1] = d[i]; strides[i + 1] = rm[i]; }
  return memory::desc(dims, dt, strides);
}

// A JAX kernel (*S, I/G, O) as oneDNN weights: {O, I, *S} or, grouped,
// {G, O/G, I/G, *S}, with the strides of the row-major (*S, I/G, O) buffer.
memory::desc WeightsDesc(ffi::Span<const int64_t> d, int64_t groups, memory::data_type dt) {
  const int64_t r = static_cast<int64_t>(d.size());
  const int64_t ns = r - 2;
  std::vector<int64_t> rm(r);
  rm[r - 1] = 1;
  for (int64_t i = r - 2; i >= 0; --i) rm[i] = rm[i + 1] * d[i + 1];
  const int64_t ig = d[r - 2], o = d[r - 1];
  memory::dims dims, strides;
  if (groups == 1) {
    dims = {o, ig};
    strides = {rm[r - 1], rm[r - 2]};
  } else {
    const int64_t og = o / groups;
    dims = {groups, og, ig};
    strides = {og * rm[r - 1], rm[r - 1], rm[r - 2]};
  }
  for (int64_t i = 0; i < ns; ++i) { dims.push_back(d[i]); strides.push_back(rm[i]); }
  return memory::desc(dims, dt, strides);
}

memory::desc AnyLike(const memory::desc& md) {
  return memory::desc(md.get_dims(), md.get_data_type(), memory::format_tag::any);
}

struct Geometry {
  memory::dims strides, dilates, pad_l, pad_r;
};

ffi::Error MakeGeometry(ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo,
                        ffi::Span<const int64_t> pad_hi, ffi::Span<const int64_t> dilation,
                        size_t rank, Geometry* g) {
  const size_t ns = rank - 2;
  if (strides.size() != ns || pad_lo.size() != ns || pad_hi.size() != ns || dilation.size() != ns)
    return ffi::Error::InvalidArgument("cnncli oneDNN conv: attribute length != spatial rank");
  for (size_t i = 0; i < ns; ++i) {
    g->strides.push_back(strides[i]);
    g->dilates.push_back(dilation[i] - 1);  // oneDNN counts the holes
    g->pad_l.push_back(pad_lo[i]);
    g->pad_r.push_back(pad_hi[i]);
  }
  return ffi::Error::Success();
}

std::string Key(const char* pass, std::initializer_list<const ffi::AnyBuffer*> bufs,
                const Geometry& g, int64_t groups) {
  std::ostringstream k;
  k << pass;
  for (const auto* b : bufs) {
    k << '|' << static_cast<int>(b->element_type()) << ':';
    for (int64_t v : b->dimensions()) k << v << ',';
  }
  for (const auto* v : {&g.strides, &g.dilates, &g.pad_l, &g.pad_r}) {
    k << '|';
    for (int64_t x : *v) k << x << ',';
  }
  k << '|' << groups;
  return k.str();
}


// A compiled problem: the main primitive plus, where oneDNN wants blocked weights,
// the reorder to (fwd, bwd_data) or from (bwd_weights) JAX's plain layout.
struct Plan {
  int index = 0;          // position of the implementation in oneDNN's list (0: its first pick)
  std::string impl;       // its name, e.g. "jit:avx512_core"
  dnnl::primitive main;
  memory::desc src, dst;  // the convolution's input- and output-side activations (or their gradients)
  memory::desc blocked;   // weights desc the primitive uses
  memory::desc plain;     // JAX's layout
  bool reorder = false;
  dnnl::primitive to_or_from;  // reorder plain->blocked or blocked->plain
  memory blocked_mem;          // the blocked copy of the kernel (oneDNN-allocated, aligned)
  memory scratchpad;           // the main primitive's scratch (user mode: see Attr)
  memory reorder_scratchpad;
};

// Scratch memory is the caller's ("user" mode), one buffer per plan. In oneDNN's
// default "library" mode some kernels (the gemm/im2col fallback among them) keep it
// in storage private to the thread that created the primitive, and a cached plan
// runs on whichever XLA thread picks the call up: that crashed. One oneDNN call
// runs at a time (CallMutex), so a plan's buffers are never used twice at once.
dnnl::primitive_attr Attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The plans by problem key; used under CallMutex only.
std::unordered_map<std::string, std::unique_ptr<Plan>>& Cache() {
  static std::unordered_map<std::string, std::unique_ptr<Plan>> cache;
  return cache;
}

void Reorder(Plan* plan, dnnl::stream& stream, memory& from, memory& to) {
  plan->to_or_from.execute(stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                                    {DNNL_ARG_SCRATCHPAD, plan->reorder_scratchpad}});
}

enum class Pass { kFwd, kBwdData, kBwdWeights };

// Which of the three buffers (a, b, out) plays which role in a pass, and the oneDNN
// argument each role is. In every pass the convolution's input side is one buffer,
// its output side another, the kernel the third:
//   fwd:         a = x (SRC),   b = w (WEIGHTS),   out = y  (DST)
//   bwd_data:    a = dy (DIFF_DST), b = w (WEIGHTS), out = dx (DIFF_SRC)
//   bwd_weights: a = x (SRC),   b = dy (DIFF_DST), out = dw (DIFF_WEIGHTS)
struct Roles {
  int src, dst, wei;              // buffer index: 0 = a, 1 = b, 2 = out
  int src_arg, dst_arg, wei_arg;  // DNNL_ARG_*
};

const Roles& RolesOf(Pass pass) {
  static const Roles roles[] = {
      {0, 2, 1, DNNL_ARG_SRC, DNNL_ARG_DST, DNNL_ARG_WEIGHTS},
      {2, 0, 1, DNNL_ARG_DIFF_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS},
      {0, 1, 2, DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS},
  };
  return roles[static_cast<int>(pass)];
}

// The pass's primitive descriptor at position `index` of oneDNN's list (0: its first
// pick), or false when the list is shorter. The forward descriptor is the pass itself
// (fwd) or, at its first pick, the hint the backward passes need; weights are `any`.
template <typename Use>
bool WithDesc(Pass pass, const memory::desc& src, const memory::desc& plain, const memory::desc& dst,
              const Geometry& g, int index, Use&& use) {
  const auto algo = dnnl::algorithm::convolution_direct;
  auto fwd = dnnl::convolution_forward::primitive_desc(Engine(), dnnl::prop_kind::forward_training, algo, src,
                                                       AnyLike(plain), dst, g.strides, g.dilates, g.pad_l,
                                                       g.pad_r, Attr());
  auto at = [&](auto pd) {
    for (int i = 0; i < index; ++i)
      if (!pd.next_impl()) return false;
    use(pd);
    return true;
  };
  if (pass == Pass::kFwd) return at(fwd);
  if (pass == Pass::kBwdData)
    return at(dnnl::convolution_backward_data::primitive_desc(Engine(), algo, src, AnyLike(plain), dst, g.strides,
                                                              g.dilates, g.pad_l, g.pad_r, fwd, Attr()));
  return at(dnnl::convolution_backward_weights::primitive_desc(Engine(), algo, src, AnyLike(plain), dst, g.strides,
                                                               g.dilates, g.pad_l, g.pad_r, fwd, Attr()));
}

// The names of the implementations oneDNN lists for a problem, in its order.
std::vector<std::string> ImplNames(Pass pass, const memory::desc& src, const memory::desc& plain,
                                   const memory::desc& dst, const Geometry& g) {
  std::vector<std::string> names;
  WithDesc(pass, src, plain, dst, g, 0, [&](auto pd) {
    do names.emplace_back(pd.impl_info_str());
    while (pd.next_impl());
  });
  return names;
}

// Build a pass's primitives with implementation `index`: the main primitive and, where
// it wants blocked weights, the reorder into (fwd, bwd_data) or out of (bwd_weights)
// JAX's plain layout. Null when oneDNN lists fewer implementations.
std::unique_ptr<Plan> MakePlan(Pass pass, const memory::desc& src, const memory::desc& dst,
                               const memory::desc& plain, const Geometry& g, int index = 0) {
  auto p = std::make_unique<Plan>();
  p->src = src;
  p->dst = dst;
  p->plain = plain;
  p->index = index;
  const bool found = WithDesc(pass, src, plain, dst, g, index, [&](auto pd) {
    using PD = decltype(pd);
    if constexpr (std::is_same_v<PD, dnnl::convolution_backward_weights::primitive_desc>)
      p->blocked = pd.diff_weights_desc();
    else
      p->blocked = pd.weights_desc();
    p->scratchpad = memory(pd.scratchpad_desc(), Engine());
    p->main = dnnl::primitive(pd);
  });
  if (!found) return nullptr;
  // The name of the kernel the primitive runs, asked of the primitive itself (with
  // oneDNN's primitive cache on, it could differ from the descriptor's; see Engine).
  const char* impl = nullptr;
  dnnl_primitive_desc_query(p->main.get_primitive_desc(), dnnl_query_impl_info_str, 0, &impl);
  p->impl = impl ? impl : "";
  p->reorder = p->blocked != p->plain;
  if (p->reorder) {
    p->blocked_mem = memory(p->blocked, Engine());
    auto rpd = pass == Pass::kBwdWeights
                   ? dnnl::reorder::primitive_desc(Engine(), p->blocked, Engine(), p->plain, Attr())
                   : dnnl::reorder::primitive_desc(Engine(), p->plain, Engine(), p->blocked, Attr());
    p->reorder_scratchpad = memory(rpd.scratchpad_desc(), Engine());
    p->to_or_from = dnnl::reorder(rpd);
  }
  return p;
}

// One call of a plan on the buffers (src side, dst side, plain weights), as Roles
// assign them; the caller holds CallMutex.
void Execute(Pass pass, Plan* plan, void* src_ptr, void* dst_ptr, void* wei_ptr) {
  const Roles& r = RolesOf(pass);
  dnnl::stream stream(Engine());
  auto& eng = Engine();
  memory src(plan->src, eng, src_ptr);
  memory dst(plan->dst, eng, dst_ptr);
  memory wplain(plan->plain, eng, wei_ptr);
  memory wei = plan->reorder ? plan->blocked_mem : wplain;
  const bool weights_out = pass == Pass::kBwdWeights;
  if (plan->reorder && !weights_out) Reorder(plan, stream, wplain, wei);
  plan->main.execute(stream, {{r.src_arg, src}, {r.dst_arg, dst}, {r.wei_arg, wei},
                              {DNNL_ARG_SCRATCHPAD, plan->scratchpad}});
  if (plan->reorder && weights_out) Reorder(plan, stream, wei, wplain);
  stream.wait();
}

// ------------------------------------------------------------------ implementation choice

struct Choice {
  int index = 0;
  std::string impl;
};

// What cnncli_onednn_configure set: whether to time implementations, and the file
// that records the choices (empty: this process only). Guarded by CallMutex.
struct Tuning {
  bool enabled = true;
  std::string path;
  std::unordered_map<std::string, Choice> recorded;
};

Tuning& TuningState() {
  static Tuning t;
  return t;
}

// The record's lines "key<TAB>index<TAB>impl<TAB>timings"; a later line for a key
// wins. Malformed lines are skipped: the record is a cache, not a contract.
void ReadChoices(Tuning& t) {
  t.recorded.clear();
  if (t.path.empty()) return;
  std::ifstream in(t.path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key, index, impl;
    if (!std::getline(fields, key, '\t') || !std::getline(fields, index, '\t') || !std::getline(fields, impl, '\t'))
      continue;
    try {
      t.recorded[key] = Choice{std::stoi(index), impl};
    } catch (const std::exception&) {
    }
  }
}

// The record, open and locked (flock) while a new problem is timed: a process that
// starts timing the same problem at the same time waits, then reads the first one's
// choice instead of making its own (so a resume reads what its run used). Without a
// file (no path, or it cannot be opened) the choice stays in this process.
class RecordLock {
 public:
  explicit RecordLock(const std::string& path) {
    if (!path.empty()) fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RecordLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  bool locked() const { return fd_ >= 0; }
  void Append(const std::string& line) const {
    if (fd_ < 0) return;
    const char* p = line.data();
    size_t left = line.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n <= 0) return;  // a full disk costs only the record
      p += n;
      left -= static_cast<size_t>(n);
    }
  }

 private:
  int fd_ = -1;
};

double Milliseconds(Pass pass, Plan* plan, void* s, void* d, void* w) {
  const auto t0 = std::chrono::steady_clock::now();
  Execute(pass, plan, s, d, w);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// The recorded choice for `key` when oneDNN still lists that implementation at that
// position (another oneDNN build may not), else null.
std::unique_ptr<Plan> Recorded(const Tuning& t, Pass pass, const std::string& key, const memory::desc& src,
                               const memory::desc& dst, const memory::desc& plain, const Geometry& g) {
  auto it = t.recorded.find(key);
  if (it == t.recorded.end()) return nullptr;
  try {
    auto p = MakePlan(pass, src, dst, plain, g, it->second.index);
    if (p && p->impl == it->second.impl) return p;
  } catch (const dnnl::error&) {
  }
  return nullptr;
}

// The plan for a new problem: the recorded choice if there is one, else the listed
// implementations timed on these buffers (reference loops excluded; an untimed call
// each, then three rounds over them, the best round counting, those 3x slower than
// the fastest dropping out after the first; an implementation that fails to build is
// skipped). oneDNN's first pick stays unless another is at
// least 10% faster; among those, the first in oneDNN's order within 3% of the
// fastest (timing noise should not decide). The calls overwrite the output buffer;
// the real call comes after. The caller holds CallMutex.
std::unique_ptr<Plan> Choose(Pass pass, const std::string& key, const memory::desc& src, const memory::desc& dst,
                             const memory::desc& plain, const Geometry& g, void* s, void* d, void* w) {
  Tuning& t = TuningState();
  if (!t.enabled) return MakePlan(pass, src, dst, plain, g);
  if (auto p = Recorded(t, pass, key, src, dst, plain, g)) return p;
  const RecordLock lock(t.path);
  if (lock.locked()) ReadChoices(t);  // another process may have timed this problem meanwhile
  if (auto p = Recorded(t, pass, key, src, dst, plain, g)) return p;
  const auto names = ImplNames(pass, src, plain, dst, g);
  std::vector<std::unique_ptr<Plan>> plans(names.size());
  std::vector<double> ms(names.size(), 1e300);
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].rfind("ref", 0) == 0) continue;  // reference loops: 100x slower
    try {
      plans[i] = MakePlan(pass, src, dst, plain, g, static_cast<int>(i));
      if (!plans[i]) break;
      Execute(pass, plans[i].get(), s, d, w);  // untimed: first touch of its scratch and weights
    } catch (const dnnl::error&) {  // listed but not buildable here: not a candidate
      plans[i].reset();
    }
  }
  // Rounds over the candidates, so that load from outside (XLA runs independent ops
  // on its other thread meanwhile) falls on each alike; the best round counts. Those
  // 3x slower than the fastest in the first round drop out. (The first calls are not
  // timed: the very first one in a process also pays for starting its threads.)
  for (int round = 0; round < 3; ++round) {
    const double fastest = *std::min_element(ms.begin(), ms.end());
    for (size_t i = 0; i < names.size(); ++i)
      if (plans[i] && (round == 0 || ms[i] < 3 * fastest)) {
        try {
          ms[i] = std::min(ms[i], Milliseconds(pass, plans[i].get(), s, d, w));
        } catch (const dnnl::error&) {
          plans[i].reset();
          ms[i] = 1e300;
        }
      }
  }
  std::ostringstream timings;
  for (size_t i = 0; i < names.size(); ++i)
    if (plans[i]) timings << (timings.tellp() > 0 ? " " : "") << i << ':' << names[i] << '=' << ms[i];
  const double fastest = *std::min_element(ms.begin(), ms.end());
  size_t best = 0;
  while (best + 1 < ms.size() && ms[best] > 1.03 * fastest) ++best;
  if (!plans[best] || ms[0] <= 1.1 * ms[best]) best = 0;
  if (!plans[best]) plans[best] = MakePlan(pass, src, dst, plain, g);  // nothing timed: oneDNN's pick
  t.recorded[key] = Choice{static_cast<int>(best), plans[best]->impl};
  std::ostringstream line;
  line << key << '\t' << best << '\t' << plans[best]->impl << '\t' << timings.str() << '\n';
  lock.Append(line.str());
  return std::move(plans[best]);
}

// act_in: x (fwd, bwd_weights) or dy (bwd_data); other: w (fwd, bwd_data) or dy (bwd_weights).
ffi::Error Run(Pass pass, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
               ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo,
               ffi::Span<const int64_t> pad_hi, ffi::Span<const int64_t> dilation, int64_t groups) {
  try {
    const size_t rank = a.dimensions().size();
    if (rank < 3 || rank > 5)
      return ffi::Error::InvalidArgument("cnncli oneDNN conv: 1 to 3 spatial axes");
    Geometry g;
    if (auto e = MakeGeometry(strides, pad_lo, pad_hi, dilation, rank, &g); e.failure()) return e;
    memory::data_type ta, tb, to;
    if (auto e = DataType(a.element_type(), &ta); e.failure()) return e;
    if (auto e = DataType(b.element_type(), &tb); e.failure()) return e;
    if (auto e = DataType(out->element_type(), &to); e.failure()) return e;

    static const char* names[] = {"fwd", "bwd_data", "bwd_weights"};
    const ffi::AnyBuffer& o = *out;
    const std::string key = Key(names[static_cast<int>(pass)], {&a, &b, &o}, g, groups);

    const Roles& r = RolesOf(pass);
    const ffi::AnyBuffer* bufs[] = {&a, &b, &o};
    const memory::data_type types[] = {ta, tb, to};
    void* s = bufs[r.src]->untyped_data();
    void* d = bufs[r.dst]->untyped_data();
    void* w = bufs[r.wei]->untyped_data();
    std::lock_guard<std::mutex> lock(CallMutex());
    auto& plan = Cache()[key];
    if (plan == nullptr)
      plan = Choose(pass, key, ActivationDesc(bufs[r.src]->dimensions(), types[r.src]),
                    ActivationDesc(bufs[r.dst]->dimensions(), types[r.dst]),
                    WeightsDesc(bufs[r.wei]->dimensions(), groups, types[r.wei]), g, s, d, w);
    Execute(pass, plan.get(), s, d, w);
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("cnncli oneDNN conv: ") + e.what());
  } catch (const std::exception& e) {  // nothing may cross the C boundary of the FFI
    return ffi::Error::Internal(std::string("cnncli oneDNN conv: ") + e.what());
  }
}

#define CNNCLI_CONV_BINDING(PASS)                                              \
  [](ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,      \
     ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_lo,        \
     ffi::Span<const int64_t> pad_hi, ffi::Span<const int64_t> dilation,       \
     int64_t groups) {                                                         \
    return Run(PASS, a, b, out, strides, pad_lo, pad_hi, dilation, groups);    \
  }

auto Bind() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<ffi::Span<const int64_t>>("strides")
      .Attr<ffi::Span<const int64_t>>("pad_lo")
      .Attr<ffi::Span<const int64_t>>("pad_hi")
      .Attr<ffi::Span<const int64_t>>("dilation")
      .Attr<int64_t>("groups");
}

// ------------------------------------------------------------------ channel sums
//
// cnncli_channel_sums(a, b) -> (sum(a), sum(a * b)), per channel (the last axis) over
// every other axis, in float32. BatchNorm's statistics are this with b = a (sum and
// sum of squares) and its backward reductions with a = dy, b = x. One pass over the
// inputs on every core; XLA's reductions read each input once per sum and reach
// about a third of the memory bandwidth on such column sums (BENCHMARKS.md).
// Accuracy: float32 partial sums over blocks of kBlockRows rows, added in double.

float Load(const float* p, int64_t i) { return p[i]; }
float Load(const uint16_t* p, int64_t i) {  // bfloat16: the high half of a float32
  const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

constexpr int64_t kBlockRows = 128;

// Rows [r0, r1) of row-major (M, C) inputs into per-channel double totals: 16
// channels at a time with their partial sums in registers, a block of rows at a
// time (a block's rows stay in cache while the next 16 channels read them). With
// kRelu, a counts only where b * mult + shift > 0 (per channel): the ReLU mask of a
// BatchNorm+ReLU output, recomputed from its input b instead of read from memory.
// GCC compiles the loop for AVX-512, AVX2 and plain x86-64 and picks at load time;
// clang has no target_clones on templates, so it gets the build's default ISA.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CNNCLI_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CNNCLI_CLONES
#endif

template <bool kRelu, typename A, typename B>
CNNCLI_CLONES
void SumRows(const A* __restrict a, const B* __restrict b, const float* __restrict mult,
             const float* __restrict shift, int64_t r0, int64_t r1, int64_t c, double* __restrict t1,
             double* __restrict t2) {
  constexpr int64_t kLanes = 16;
  for (int64_t blk = r0; blk < r1; blk += kBlockRows) {
    const int64_t end = blk + kBlockRows < r1 ? blk + kBlockRows : r1;
    for (int64_t j0 = 0; j0 < c; j0 += kLanes) {
      const int64_t lanes = c - j0 < kLanes ? c - j0 : kLanes;
      float s1[kLanes] = {}, s2[kLanes] = {}, mu[kLanes] = {}, sh[kLanes] = {};
      if (kRelu)
        for (int64_t k = 0; k < lanes; ++k) { mu[k] = mult[j0 + k]; sh[k] = shift[j0 + k]; }
      auto add = [&](int64_t off, int64_t k) {
        const float y = Load(b, off + k);
        float x = Load(a, off + k);
        if (kRelu) x = y * mu[k] + sh[k] > 0.f ? x : 0.f;
        s1[k] += x;
        s2[k] += x * y;
      };
      if (lanes == kLanes) {
        for (int64_t r = blk; r < end; ++r)
          for (int64_t k = 0; k < kLanes; ++k) add(r * c + j0, k);
      } else {
        for (int64_t r = blk; r < end; ++r)
          for (int64_t k = 0; k < lanes; ++k) add(r * c + j0, k);
      }
      for (int64_t k = 0; k < lanes; ++k) { t1[j0 + k] += s1[k]; t2[j0 + k] += s2[k]; }
    }
  }
}

template <bool kRelu, typename A, typename B>
void ChannelSums(const A* a, const B* b, const float* mult, const float* shift, int64_t m, int64_t c,
                 float* out1, float* out2) {
  // One row of partial sums per thread, added in thread order afterwards: the same
  // result every call for a given thread count.
  std::vector<std::vector<double>> partial;
#pragma omp parallel
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
#pragma omp single
    partial.resize(nt);  // the team's size (implicit barrier after)
    const int64_t blocks = (m + kBlockRows - 1) / kBlockRows;  // whole blocks per thread
    const int64_t r0 = std::min(m, blocks * t / nt * kBlockRows);
    const int64_t r1 = std::min(m, blocks * (t + 1) / nt * kBlockRows);
    std::vector<double> tt(2 * c, 0.0);
    if (r1 > r0) SumRows<kRelu>(a, b, mult, shift, r0, r1, c, tt.data(), tt.data() + c);
    partial[t] = std::move(tt);
  }
  std::vector<double> total(2 * c, 0.0);
  for (const auto& tt : partial)
    for (size_t j = 0; j < tt.size(); ++j) total[j] += tt[j];
  for (int64_t j = 0; j < c; ++j) {
    out1[j] = static_cast<float>(total[j]);
    out2[j] = static_cast<float>(total[c + j]);
  }
}

template <bool kRelu, typename A>
ffi::Error SumsWith(const A* a, const ffi::AnyBuffer& b, const float* mult, const float* shift, int64_t m,
                    int64_t c, float* o1, float* o2) {
  if (b.element_type() == ffi::DataType::F32)
    ChannelSums<kRelu>(a, static_cast<const float*>(b.untyped_data()), mult, shift, m, c, o1, o2);
  else if (b.element_type() == ffi::DataType::BF16)
    ChannelSums<kRelu>(a, static_cast<const uint16_t*>(b.untyped_data()), mult, shift, m, c, o1, o2);
  else
    return ffi::Error::InvalidArgument("cnncli channel sums: only float32 and bfloat16");
  return ffi::Error::Success();
}

template <bool kRelu>
ffi::Error RunSums(const ffi::AnyBuffer& a, const ffi::AnyBuffer& b, const float* mult, const float* shift,
                   ffi::Result<ffi::Buffer<ffi::F32>>& sum_a, ffi::Result<ffi::Buffer<ffi::F32>>& sum_ab) {
  const auto da = a.dimensions(), db = b.dimensions();
  if (da.size() < 1 || da.size() != db.size() || !std::equal(da.begin(), da.end(), db.begin()))
    return ffi::Error::InvalidArgument("cnncli channel sums: a and b must have one shape");
  const int64_t c = da.back();
  const int64_t m = c == 0 ? 0 : static_cast<int64_t>(a.element_count()) / c;
  if (sum_a->element_count() != static_cast<size_t>(c) || sum_ab->element_count() != static_cast<size_t>(c))
    return ffi::Error::InvalidArgument("cnncli channel sums: outputs must have the channel count");
  float* o1 = sum_a->typed_data();
  float* o2 = sum_ab->typed_data();
  std::lock_guard<std::mutex> lock(CallMutex());  // one OpenMP team at a time (see CallMutex)
  if (a.element_type() == ffi::DataType::F32)
    return SumsWith<kRelu>(static_cast<const float*>(a.untyped_data()), b, mult, shift, m, c, o1, o2);
  if (a.element_type() == ffi::DataType::BF16)
    return SumsWith<kRelu>(static_cast<const uint16_t*>(a.untyped_data()), b, mult, shift, m, c, o1, o2);
  return ffi::Error::InvalidArgument("cnncli channel sums: only float32 and bfloat16");
}

ffi::Error RunChannelSums(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::Buffer<ffi::F32>> sum_a,
                          ffi::Result<ffi::Buffer<ffi::F32>> sum_ab) {
  return RunSums<false>(a, b, nullptr, nullptr, sum_a, sum_ab);
}

ffi::Error RunChannelSumsRelu(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Buffer<ffi::F32> mult,
                              ffi::Buffer<ffi::F32> shift, ffi::Result<ffi::Buffer<ffi::F32>> sum_a,
                              ffi::Result<ffi::Buffer<ffi::F32>> sum_ab) {
  const int64_t c = a.dimensions().size() == 0 ? 0 : a.dimensions().back();
  if (mult.element_count() != static_cast<size_t>(c) || shift.element_count() != static_cast<size_t>(c))
    return ffi::Error::InvalidArgument("cnncli channel sums: mult and shift must have the channel count");
  return RunSums<true>(a, b, mult.typed_data(), shift.typed_data(), sum_a, sum_ab);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(cnncli_channel_sums, RunChannelSums,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(cnncli_channel_sums_relu, RunChannelSumsRelu,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(cnncli_onednn_conv_fwd, CNNCLI_CONV_BINDING(Pass::kFwd), Bind());
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnncli_onednn_conv_bwd_data, CNNCLI_CONV_BINDING(Pass::kBwdData), Bind());
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnncli_onednn_conv_bwd_weights, CNNCLI_CONV_BINDING(Pass::kBwdWeights), Bind());

// Whether to time implementations (tune != 0) and the file that records the choices
// ("" or null: none). Drops this process's plans, so call it while no convolution runs.
extern "C" int cnncli_onednn_configure(int tune, const char* path) {
  try {
    std::lock_guard<std::mutex> lock(CallMutex());
    Tuning& t = TuningState();
    t.enabled = tune != 0;
    t.path = path ? path : "";
    ReadChoices(t);
    Cache().clear();
    return 0;
  } catch (const std::exception&) {
    return 1;
  }
}

// OpenMP's thread count for oneDNN's calls: kernels rank differently at another count,
// so the record is per count (and a run is the same bit for bit only at one count).
extern "C" int cnncli_onednn_threads() { return omp_get_max_threads(); }

// This process's plans, one line each: "key<TAB>index<TAB>impl".
extern "C" const char* cnncli_onednn_plans() {
  static std::string text;  // the caller copies it before the next call (onednn.implementations)
  try {
    std::lock_guard<std::mutex> lock(CallMutex());
    std::ostringstream out;
    for (const auto& [key, plan] : Cache()) out << key << '\t' << plan->index << '\t' << plan->impl << '\n';
    text = out.str();
  } catch (const std::exception&) {
    text.clear();
  }
  return text.c_str();
}

extern "C" const char* cnncli_onednn_version() {
  static std::string v = [] {
    const dnnl_version_t* ver = dnnl::version();
    std::ostringstream s;
    s << ver->major << '.' << ver->minor << '.' << ver->patch;
    return s.str();
  }();
  return v.c_str();
}

// 1 if oneDNN builds all three passes of a small bfloat16 convolution on this CPU
// (it has bfloat16 kernels only from AVX-512 on), else 0. onednn.supports() keeps
// bfloat16 convolutions on lax where this is 0.
extern "C" int cnncli_onednn_supports_bf16() {
  try {
    const auto bf16 = memory::data_type::bf16;
    const memory::desc src({2, 16, 8, 8}, bf16, memory::format_tag::nhwc);
    const memory::desc wei({16, 16, 3, 3}, bf16, memory::format_tag::any);
    const memory::desc dst({2, 16, 8, 8}, bf16, memory::format_tag::nhwc);
    const memory::dims one = {1, 1}, zero = {0, 0};
    auto fwd = dnnl::convolution_forward::primitive_desc(Engine(), dnnl::prop_kind::forward_training,
                                                         dnnl::algorithm::convolution_direct, src, wei, dst,
                                                         one, zero, one, one);
    dnnl::convolution_backward_data::primitive_desc(Engine(), dnnl::algorithm::convolution_direct, src, wei, dst,
                                                    one, zero, one, one, fwd);
    dnnl::convolution_backward_weights::primitive_desc(Engine(), dnnl::algorithm::convolution_direct, src, wei,
                                                       dst, one, zero, one, one, fwd);
    return 1;
  } catch (const std::exception&) {
    return 0;
  }
}
