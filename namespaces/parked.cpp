// ParkedInit: the warm pool's non-blocking spawn. The handshake is spawn_init's
// without its hooks' round (go with the host pid → ready), driven by the daemon's
// event loop, then a claim instead of exec.fifo.
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "namespaces/namespaces.hpp"
#include "namespaces/steps.hpp"
#include "namespaces/sync.hpp"
#include "namespaces/syscalls.hpp"

namespace tarn::ns {

using namespace detail;

ParkedInit::ParkedInit(const oci::Config& config, const InitOptions& opts, const std::function<void(pid_t)>& place) {
    if (!config.process) throw Error("process: required to start a container");
    if (!opts.await_claim) throw Error("a parked init needs await_claim");
    if (config.hooks && *config.hooks != oci::Hooks{})
        throw Error("hooks: a pool template cannot have hooks (a sandbox is made before its request)");
    Plan plan = make_plan(config, opts);
    if (plan.intermediate)
        throw Error("linux.namespaces: a pool template cannot join namespaces by path or create a time namespace");
    std::vector<UniqueFd> idmapped;
    {
        PhaseScope s(timings_, Phase::mounts);
        idmapped = prepare_idmapped_mounts(config);
    }
    for (const UniqueFd& t : idmapped) plan.idmapped_trees.push_back(t.get());
    t0_ = std::chrono::steady_clock::now();
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair");
    UniqueFd parent_end(sv[0]), child_end(sv[1]);
    int pidfd = -1;
    CloneArgs a = init_clone_args(plan.new_flags, &pidfd, opts.cgroup_fd);
    // clone3 takes no exit signal with CLONE_PARENT: the child inherits ours (SIGCHLD).
    if (opts.clone_parent) a.flags |= CLONE_PARENT;
    else a.exit_signal = SIGCHLD;
    pid_t pid = detail::clone3(a);
    if (pid < 0) throw_errno("clone3 sandbox init");
    if (pid == 0) {
        SyncSocket s(child_end.get());
        run_child(s, [&] {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
            // As spawn_init: not dumpable while it runs the runtime's code (CVE-2019-5736).
            if (!(config.linux && config.linux->find_namespace(oci::NamespaceType::user)) &&
                ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
                throw_errno("prctl dumpable");
            parent_end.reset();
            std::vector<int> keep{child_end.get()};
            keep.insert(keep.end(), plan.idmapped_trees.begin(), plan.idmapped_trees.end());
            if (plan.self_join_cgroups)
                for (const auto& [fd, path] : opts.cgroup_self_join) keep.push_back(fd);
            close_inherited_fds(0, keep);
            init_main(config, opts, ChildSteps{}, s, plan);
        });
    }
    pid_ = pid;
    pidfd_.reset(pidfd);
    sock_ = std::move(parent_end);
    child_end.reset();
    idmapped.clear();
    timings_.add(Phase::clone, std::chrono::steady_clock::now() - t0_);
    try {
        if (place && opts.cgroup_fd < 0 && !plan.self_join_cgroups) {
            PhaseScope s(timings_, Phase::cgroup);
            place(pid_);
        }
        if (plan.new_userns) {
            PhaseScope s(timings_, Phase::idmaps);
            write_id_maps(pid_, *config.linux);
        }
        // With its host pid: no hooks, so no "mounted" round (init_main).
        SyncSocket(sock_.get()).send(MsgType::go, {}, nullptr, pid_);
        state_ = State::readying;
    } catch (...) {
        kill_and_reap(pidfd_.get(), pid_);
        pid_ = -1;
        throw;
    }
}

ParkedInit::~ParkedInit() {
    if (pid_ > 0 && !released_) kill_and_reap(pidfd_.get(), pid_);
}

bool ParkedInit::advance() {
    SyncSocket sock(sock_.get());
    try {
        Packet p;
        if (!sock.recv(p)) throw Error("sandbox init died during setup");
        if (p.type == MsgType::error) throw Error(p.text);
        if (state_ == State::readying && p.type == MsgType::ready) {
            timings_.merge(p.timings);
            state_ = State::parked;
            return true;
        }
        throw Error("sync with sandbox init: unexpected message");
    } catch (...) {
        kill_and_reap(pidfd_.get(), pid_);
        pid_ = -1;
        throw;
    }
}

void ParkedInit::claim(const Claim& c) {
    if (state_ != State::parked) throw Error("claim: sandbox is not parked");
    send_claim(sock_.get(), c);
    state_ = State::claimed;
}

std::unique_ptr<ParkedInit> ParkedInit::adopt(UniqueFd sock, UniqueFd pidfd, pid_t pid) {
    std::unique_ptr<ParkedInit> p(new ParkedInit());
    p->sock_ = std::move(sock);
    p->pidfd_ = std::move(pidfd);
    p->pid_ = pid;
    p->state_ = State::parked;
    return p;
}

std::pair<UniqueFd, UniqueFd> ParkedInit::take_fds() {
    released_ = true;
    return {std::move(sock_), std::move(pidfd_)};
}

void ParkedInit::signal(int sig) const {
    if (pid_ > 0) (void)pidfd_send_signal(pidfd_.get(), sig);
}

std::string ParkedInit::claim_outcome() {
    Packet p;
    if (!SyncSocket(sock_.get()).recv(p)) return {};
    return p.type == MsgType::error ? std::string(p.text) : std::string("sync with sandbox init: unexpected message");
}

}  // namespace tarn::ns
