#include <unistd.h>

#include <cctype>
#include <iostream>
#include <iterator>

#include "runtime/cgroup.hpp"
#include "runtime/lifecycle.hpp"

namespace tarn::runtime {

int64_t parse_bytes(const std::string& s, const char* flag) {
    if (s == "-1") return -1;
    size_t i = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == 0) throw Error(std::string(flag) + ": bad size \"" + s + "\"");
    int64_t n = std::stoll(s.substr(0, i));
    std::string unit = s.substr(i);
    for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (unit.empty() || unit == "b") return n;
    if (unit == "k" || unit == "kb" || unit == "kib") return n << 10;
    if (unit == "m" || unit == "mb" || unit == "mib") return n << 20;
    if (unit == "g" || unit == "gb" || unit == "gib") return n << 30;
    if (unit == "t" || unit == "tb" || unit == "tib") return n << 40;
    throw Error(std::string(flag) + ": bad size \"" + s + "\"");
}

int update(const GlobalOptions& g, const UpdateOptions& o) {
    try {
        oci::Resources r;
        if (!o.resources.empty()) {
            std::string text;
            if (o.resources == "-")
                text = read_fd(STDIN_FILENO, kMaxJsonDocument, "resources (stdin)");
            else
                text = read_file(o.resources, kMaxJsonDocument);
            r = oci::parse_resources(text, o.resources == "-" ? "resources (stdin)" : o.resources);
        }
        auto memory = [&]() -> oci::Memory& {
            if (!r.memory) r.memory.emplace();
            return *r.memory;
        };
        auto cpu = [&]() -> oci::Cpu& {
            if (!r.cpu) r.cpu.emplace();
            return *r.cpu;
        };
        if (o.memory) memory().limit = parse_bytes(*o.memory, "--memory");
        if (o.memory_swap) memory().swap = parse_bytes(*o.memory_swap, "--memory-swap");
        if (o.memory_reservation) memory().reservation = parse_bytes(*o.memory_reservation, "--memory-reservation");
        if (o.cpu_quota) cpu().quota = *o.cpu_quota;
        if (o.cpu_period) cpu().period = *o.cpu_period;
        if (o.cpu_share) cpu().shares = *o.cpu_share;
        if (o.cpu_rt_runtime) cpu().realtime_runtime = *o.cpu_rt_runtime;
        if (o.cpu_rt_period) cpu().realtime_period = *o.cpu_rt_period;
        if (o.cpuset_cpus) cpu().cpus = *o.cpuset_cpus;
        if (o.cpuset_mems) cpu().mems = *o.cpuset_mems;
        if (o.pids_limit) r.pids = oci::Pids{*o.pids_limit};
        if (o.blkio_weight) {
            if (!r.block_io) r.block_io.emplace();
            r.block_io->weight = *o.blkio_weight;
        }
        detail::ContainerDir dir = detail::ContainerDir::open(g.root, o.id);
        detail::Record rec = dir.load();
        oci::Status st = detail::current_status(dir, rec);
        if (st == oci::Status::stopped || st == oci::Status::creating)
            throw Error("cannot update a container that is " + std::string(oci::to_string(st)));
        auto cg = detail::open_cgroup(rec);
        if (!cg) throw Error("container has no cgroup");
        cg->apply(r);
        return 0;
    } catch (const Error& e) {
        throw e.wrapped("update " + o.id);
    }
}

}  // namespace tarn::runtime
