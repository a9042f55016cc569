// The ucx transport's pieces in one process: the active-message header
// (the same decoder the fuzzer drives), the lane list UCX reports, and the
// registration hook (a pool slab is ucp_mem_map'ed once, across loans).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <vector>

#include "memory/pool.hpp"
#include "transport/transport.hpp"
#include "transport/ucx/ucx_endpoint.hpp"
#include "transport/ucx/ucx_wire.hpp"
#include "transport/ucx/ucx_worker.hpp"

using namespace lf;
using namespace lf::ucx;

namespace {

TEST(UcxWire, RoundTrip) {
  unsigned char b[kHeaderSize];
  encode_header(Header{MsgType::data, 3, 7, 0x1122334455667788ull, ~0ull}, b);
  Header h;
  ASSERT_EQ(decode_header(b, sizeof b, 100, 4, &h), nullptr);
  EXPECT_EQ(h.type, MsgType::data);
  EXPECT_EQ(h.rank, 3u);
  EXPECT_EQ(h.channel, 7u);
  EXPECT_EQ(h.seq, 0x1122334455667788ull);
  EXPECT_EQ(h.tag, ~0ull);
}

TEST(UcxWire, MalformedHeadersAreRefused) {
  unsigned char good[kHeaderSize];
  encode_header(Header{MsgType::data, 1, 0, 0, 5}, good);
  Header h{MsgType::data, 99, 99, 99, 99};
  const Header before = h;
  auto refused = [&](const unsigned char *b, size_t n, size_t payload, uint32_t world) {
    const char *why = decode_header(b, n, payload, world, &h);
    return why != nullptr && std::strlen(why) > 0;
  };
  EXPECT_TRUE(refused(good, kHeaderSize - 1, 0, 2));  // short
  EXPECT_TRUE(refused(nullptr, 0, 0, 2));
  EXPECT_TRUE(refused(good, kHeaderSize, 0, 1));  // rank 1 in a world of 1
  unsigned char b[kHeaderSize];
  std::memcpy(b, good, sizeof b);
  b[0] ^= 1;  // magic
  EXPECT_TRUE(refused(b, sizeof b, 0, 2));
  std::memcpy(b, good, sizeof b);
  b[4] = 9;  // type
  EXPECT_TRUE(refused(b, sizeof b, 0, 2));
  std::memcpy(b, good, sizeof b);
  b[6] = 1;  // reserved
  EXPECT_TRUE(refused(b, sizeof b, 0, 2));
  encode_header(Header{MsgType::bye, 1, 0, 4, 0}, b);
  EXPECT_TRUE(refused(b, sizeof b, 1, 2));  // a close with data
  encode_header(Header{MsgType::bye, 1, 0, 4, 3}, b);
  EXPECT_TRUE(refused(b, sizeof b, 0, 2));  // a close with a tag
  EXPECT_EQ(h.seq, before.seq) << "a refused header left the output untouched";
  EXPECT_EQ(decode_header(good, kHeaderSize, 0, 2, &h), nullptr);
}

TEST(UcxWire, SequenceVerdicts) {
  EXPECT_EQ(check_sequence(5, 5), SeqVerdict::deliver);
  EXPECT_EQ(check_sequence(5, 6), SeqVerdict::hold);
  EXPECT_EQ(check_sequence(5, 4), SeqVerdict::duplicate);
  EXPECT_EQ(check_sequence(0, kMaxReorder + 1), SeqVerdict::too_far);
  EXPECT_EQ(check_sequence(~0ull - 1, ~0ull), SeqVerdict::hold);
}

TEST(UcxLanes, ParsedFromUcpContextInfo) {
  const char *info =
      "#\n# UCP context\n#\n#            md 0  :  component 0  self \n"
      "#      resource 0  :  md 0  dev 0  flags -- self/memory0\n"
      "#      resource 1  :  md 1  dev 1  flags -- tcp/lo\n"
      "#      resource 2  :  md 2  dev 3  flags -- posix/memory\n"
      "#      resource 3  :  md 3  dev 3  flags -- cma/memory\n#\n";
  Lanes l = Lanes::parse_context_info(info);
  ASSERT_EQ(l.resources.size(), 4u);
  EXPECT_EQ(l.text(), "self/memory0,tcp/lo,posix/memory,cma/memory");
  EXPECT_FALSE(l.rdma());
  EXPECT_FALSE(l.device());
  EXPECT_EQ(l.network_tls(), std::vector<std::string>{"tcp"});
  EXPECT_EQ(l.peer_tls(), (std::vector<std::string>{"cma", "posix", "tcp"}));
  EXPECT_EQ(Lanes::parse_list(l.text()).text(), l.text());
}

TEST(UcxLanes, RdmaAndDeviceLanesAreRecognised) {
  for (const char *r : {"rc_mlx5/mlx5_0:1", "rc_verbs/mlx5_0:1", "dc_mlx5/mlx5_0:1", "ud_verbs/mlx5_1:1"}) {
    Lanes l = Lanes::parse_list(std::string("tcp/eth0,") + r);
    EXPECT_TRUE(l.rdma()) << r;
    EXPECT_EQ(l.network_tls().size(), 2u) << r;
  }
  EXPECT_TRUE(Lanes::parse_list("cuda_ipc/cuda,cuda_copy/cuda").device());
  EXPECT_TRUE(Lanes::parse_list("cuda_ipc/cuda").network_tls().empty());
  EXPECT_FALSE(Lanes::parse_list("tcp/eth0,sysv/memory").rdma());
}

Transport *find_ucx(std::vector<std::unique_ptr<Transport>> &all) {
  for (auto &t : all)
    if (std::strcmp(t->name(), "ucx") == 0) return t.get();
  return nullptr;
}

// A pool block keeps its ucp_mem_map across loans: the second send of a
// buffer from the same slab finds the registration the first one made.
TEST(UcxRegistration, OncePerSlab) {
  auto all = make_transports();
  Transport *t = find_ucx(all);
  ASSERT_NE(t, nullptr);
  if (auto why = t->unavailable_reason()) GTEST_SKIP() << "ucx unavailable here: " << *why;
  auto pool = Pool::create(PoolOptions{});
  ASSERT_TRUE(pool) << pool.error().message;
  void *first_block = nullptr;
  RegistrationHandle first;
  for (int loan = 0; loan < 3; ++loan) {
    auto b = (*pool)->acquire(64 << 10);
    ASSERT_TRUE(b) << b.error().message;
    RegisteredRange r = (*b)->registered_range();
    ASSERT_NE(r.regs, nullptr);
    if (loan == 0) {
      first_block = r.base;
      EXPECT_FALSE(r.regs->has(t->instance_id()));
    } else {
      ASSERT_EQ(r.base, first_block) << "the pool did not reuse its block";
      EXPECT_TRUE(r.regs->has(t->instance_id())) << "registration lost between loans";
    }
    void *unit = nullptr;
    auto h = transport_registration(*t, **b, &unit);
    ASSERT_TRUE(h) << h.error().message;
    ASSERT_TRUE(*h) << "ucx registers host memory";
    EXPECT_EQ(unit, r.base);
    if (loan == 0)
      first = *h;
    else
      EXPECT_EQ(h->get(), first.get()) << "registered again on loan " << loan;
  }
  // A second transport instance registers for itself.
  auto other = make_transports();
  Transport *t2 = find_ucx(other);
  ASSERT_NE(t2, nullptr);
  auto b = (*pool)->acquire(64 << 10);
  ASSERT_TRUE(b);
  EXPECT_FALSE((*b)->registered_range().regs->has(t2->instance_id()));
  ASSERT_FALSE(t2->unavailable_reason());
  auto h2 = transport_registration(*t2, **b);
  ASSERT_TRUE(h2 && *h2);
  EXPECT_NE(h2->get(), first.get());
  EXPECT_TRUE((*b)->registered_range().regs->has(t2->instance_id()));
}

// Device memory is not registered by a UCX without device lanes, and
// nothing is registered twice when registration is refused.
TEST(UcxRegistration, NonHostKindsAreLeftAlone) {
  auto all = make_transports();
  Transport *t = find_ucx(all);
  ASSERT_NE(t, nullptr);
  if (auto why = t->unavailable_reason()) GTEST_SKIP() << "ucx unavailable here: " << *why;
  char mem[256];
  auto h = t->register_memory(mem, sizeof mem, MemoryKind::vulkan_device);
  ASSERT_TRUE(h);
  EXPECT_FALSE(*h);
}

/// The channel's queues, as a transport sees them.
struct FakeMatcher final : Matcher {
  std::deque<RecvOp *> posted;
  std::deque<std::unique_ptr<Incoming>> unexpected;
  RecvOp *take_posted(uint64_t tag) noexcept override {
    for (auto it = posted.begin(); it != posted.end(); ++it)
      if ((*it)->tag == tag || (*it)->tag == LF_ANY_TAG) {
        RecvOp *op = *it;
        posted.erase(it);
        return op;
      }
    return nullptr;
  }
  void add_unexpected(std::unique_ptr<Incoming> msg) noexcept override { unexpected.push_back(std::move(msg)); }
};

/// Two workers in one process, ranks 0 and 1 of a world of 2, with channel
/// 0 open both ways; `raw_send` puts arbitrary active messages on rank 0's
/// endpoint, as a broken or hostile peer would.
struct Pair {
  std::vector<std::unique_ptr<Transport>> transports = make_transports();
  std::shared_ptr<Worker> a, b;
  std::shared_ptr<Conn> ca, cb;
  std::unique_ptr<Endpoint> ea, eb;
  std::string skip;

  Pair() {
    auto wa = Worker::create(Settings{}), wb = Worker::create(Settings{});
    if (!wa || !wb) {
      skip = (!wa ? wa : wb).error().message;
      return;
    }
    a = *wa, b = *wb;
    a->set_world(0, 2), b->set_world(1, 2);
    Transport *t = find_ucx(transports);
    ca = *open_conn(a, 1, b->address());
    cb = *open_conn(b, 0, a->address());
    ea = make_endpoint(ca, *t);
    eb = make_endpoint(cb, *t);
  }
  void raw_send(const unsigned char *hdr, size_t hlen, const void *data, size_t n) {
    std::lock_guard g(a->mu);
    ucp_request_param_t prm{};
    ucs_status_ptr_t r = ucp_am_send_nbx(ca->ep, kAmId, hdr, hlen, data, n, &prm);
    ASSERT_FALSE(UCS_PTR_IS_ERR(r));
    while (r && ucp_request_check_status(r) == UCS_INPROGRESS) a->progress_locked();
    if (r) ucp_request_free(r);
  }
  /// Drive both sides until rank 1's endpoint reports an error or `done()`.
  Status drive(FakeMatcher &m, const std::function<bool()> &done) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < end) {
      {
        std::lock_guard g(a->mu);
        a->progress_locked();
      }
      if (auto st = eb->progress(m); !st) return st;
      if (done()) return {};
    }
    return std::unexpected(make_error(LF_ERR_TIMEOUT, "nothing happened within 20 s"));
  }
};

TEST(UcxEndpoint, MessagesAndTagsArriveInOrder) {
  Pair p;
  if (!p.skip.empty()) GTEST_SKIP() << p.skip;
  FakeMatcher m;
  char in[64] = {};
  RecvOp r1;
  r1.tag = 2, r1.data = in, r1.capacity = sizeof in;
  m.posted.push_back(&r1);
  SendOp s1, s2;
  s1.tag = 1, s1.data = "first", s1.size = 6;
  static const char hdr[] = "head:";
  s2.tag = 2, s2.header = hdr, s2.header_size = 5, s2.data = "tail", s2.size = 5;  // gather
  p.ea->send(s1);
  p.ea->send(s2);
  ASSERT_TRUE(p.drive(m, [&] { return r1.status != LF_IN_PROGRESS && !m.unexpected.empty(); }));
  EXPECT_EQ(r1.status, LF_OK);
  EXPECT_EQ(r1.bytes, 10u);
  EXPECT_STREQ(in, "head:tail");
  ASSERT_EQ(m.unexpected.size(), 1u);
  EXPECT_EQ(m.unexpected.front()->tag(), 1u);
  RecvOp r0;
  r0.data = in, r0.capacity = sizeof in;
  m.unexpected.front()->deliver(r0);
  EXPECT_EQ(r0.status, LF_OK);
  EXPECT_STREQ(in, "first");
  EXPECT_EQ(s1.status, LF_OK);
}

TEST(UcxEndpoint, MalformedHeaderIsAProtocolError) {
  Pair p;
  if (!p.skip.empty()) GTEST_SKIP() << p.skip;
  unsigned char hdr[kHeaderSize];
  encode_header(Header{MsgType::data, 0, 0, 0, 1}, hdr);
  hdr[4] = 77;  // no such type
  const uint64_t payload = 42;
  p.raw_send(hdr, sizeof hdr, &payload, sizeof payload);
  FakeMatcher m;
  auto st = p.drive(m, [] { return false; });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, LF_ERR_PROTOCOL) << st.error().message;
  EXPECT_NE(st.error().message.find("unknown type"), std::string::npos) << st.error().message;
}

TEST(UcxEndpoint, AMessageWithoutTheJobsTokenIsDroppedAndTheChannelLives) {
  Pair p;
  if (!p.skip.empty()) GTEST_SKIP() << p.skip;
  p.a->set_token(0x5eed), p.b->set_token(0x5eed);
  unsigned char forged[kHeaderSize], real[kHeaderSize];
  encode_header(Header{MsgType::data, 0, 0, 0, 1, 0xbad}, forged);  // right route, wrong token
  encode_header(Header{MsgType::data, 0, 0, 0, 2, 0x5eed}, real);
  const uint64_t payload = 42;
  p.raw_send(forged, sizeof forged, &payload, sizeof payload);
  p.raw_send(real, sizeof real, &payload, sizeof payload);
  FakeMatcher m;
  auto st = p.drive(m, [&] { return !m.unexpected.empty(); });
  ASSERT_TRUE(st) << st.error().message;
  ASSERT_EQ(m.unexpected.size(), 1u);
  EXPECT_EQ(m.unexpected.front()->tag(), 2u) << "the forged message was taken";
  Error stray = p.b->take_stray_error();
  EXPECT_EQ(stray.code, LF_ERR_PROTOCOL);
  EXPECT_NE(stray.message.find("token"), std::string::npos) << stray.message;
}

TEST(UcxEndpoint, RepeatedSequenceNumberIsAProtocolError) {
  Pair p;
  if (!p.skip.empty()) GTEST_SKIP() << p.skip;
  unsigned char hdr[kHeaderSize];
  encode_header(Header{MsgType::data, 0, 0, 0, 1}, hdr);
  const uint64_t payload = 42;
  p.raw_send(hdr, sizeof hdr, &payload, sizeof payload);
  p.raw_send(hdr, sizeof hdr, &payload, sizeof payload);  // seq 0 again
  FakeMatcher m;
  auto st = p.drive(m, [] { return false; });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, LF_ERR_PROTOCOL) << st.error().message;
  EXPECT_EQ(m.unexpected.size(), 1u) << "the first copy was delivered";
}

// ucx#6721: the first active message between two endpoints used to go eager
// whatever its size. The transport asks for rendezvous from
// LF_UCX_RNDV_THRESH up, and the first message of a fresh endpoint obeys.
TEST(UcxEndpoint, FirstLargeMessageGoesByRendezvous) {
  Pair p;
  if (!p.skip.empty()) GTEST_SKIP() << p.skip;
  std::vector<char> big(1 << 20, 'x');
  SendOp s;
  s.tag = 4, s.data = big.data(), s.size = big.size();
  p.ea->send(s);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool arrived = false;
  while (!arrived && std::chrono::steady_clock::now() < end) {
    std::scoped_lock g(p.a->mu, p.b->mu);
    p.a->progress_locked();
    p.b->progress_locked();
    arrived = !p.cb->ready.empty();
  }
  ASSERT_TRUE(arrived);
  {
    std::lock_guard g(p.b->mu);
    EXPECT_EQ(p.cb->ready.front().hold, Arrival::Hold::rndv);
    EXPECT_EQ(p.cb->ready.front().size, big.size());
  }
  FakeMatcher m;
  std::vector<char> in(big.size());
  RecvOp r;
  r.tag = 4, r.data = in.data(), r.capacity = in.size();
  m.posted.push_back(&r);
  ASSERT_TRUE(p.drive(m, [&] { return r.status != LF_IN_PROGRESS && s.status != LF_IN_PROGRESS; }));
  EXPECT_EQ(r.status, LF_OK);
  EXPECT_EQ(s.status, LF_OK);
  EXPECT_EQ(in, big);
}

// A message ahead of its turn waits for the one before it.
TEST(UcxEndpoint, OutOfOrderArrivalsAreReordered) {
  Pair p;
  if (!p.skip.empty()) GTEST_SKIP() << p.skip;
  unsigned char h1[kHeaderSize], h0[kHeaderSize];
  encode_header(Header{MsgType::data, 0, 0, 1, 11}, h1);
  encode_header(Header{MsgType::data, 0, 0, 0, 10}, h0);
  const uint64_t payload = 42;
  p.raw_send(h1, sizeof h1, &payload, sizeof payload);
  p.raw_send(h0, sizeof h0, &payload, sizeof payload);
  FakeMatcher m;
  ASSERT_TRUE(p.drive(m, [&] { return m.unexpected.size() == 2; }));
  EXPECT_EQ(m.unexpected[0]->tag(), 10u);
  EXPECT_EQ(m.unexpected[1]->tag(), 11u);
}

}  // namespace
