// The process object (config.md "Process"): read from config.json's `process` member or a
// standalone process.json (`exec --process`), and written back.
#include "oci/detail.hpp"
#include "oci/json_io.hpp"
#include "oci/oci.hpp"

namespace tarn::oci {

namespace {

using detail::json;
using detail::Reader;

ConsoleSize read_console_size(const Reader& r) {
    ConsoleSize s;
    r.require("height", s.height);
    r.require("width", s.width);
    return s;
}

User read_user(const Reader& r) {
    User u;
    r.read("uid", u.uid);
    r.read("gid", u.gid);
    r.read("umask", u.umask);
    r.read("additionalGids", u.additional_gids);
    r.read("username", u.username);
    return u;
}

Capabilities read_capabilities(const Reader& r) {
    Capabilities c;
    r.read("bounding", c.bounding);
    r.read("effective", c.effective);
    r.read("inheritable", c.inheritable);
    r.read("permitted", c.permitted);
    r.read("ambient", c.ambient);
    return c;
}

Rlimit read_rlimit(const Reader& r) {
    Rlimit l;
    r.require("type", l.type);
    r.require("hard", l.hard);
    r.require("soft", l.soft);
    return l;
}

Scheduler read_scheduler(const Reader& r) {
    Scheduler s;
    r.require("policy", s.policy);
    r.read("nice", s.nice);
    r.read("priority", s.priority);
    r.read("flags", s.flags);
    r.read("runtime", s.runtime);
    r.read("deadline", s.deadline);
    r.read("period", s.period);
    return s;
}

IoPriority read_io_priority(const Reader& r) {
    IoPriority p;
    r.require("class", p.klass);
    r.read("priority", p.priority);
    return p;
}

ExecCpuAffinity read_exec_cpu_affinity(const Reader& r) {
    ExecCpuAffinity a;
    r.read("initial", a.initial);
    r.read("final", a.final);
    return a;
}

}  // namespace

Process detail::read_process(const Reader& r) {
    Process p;
    r.read("terminal", p.terminal);
    p.console_size = r.object("consoleSize", read_console_size);
    if (auto u = r.object("user", read_user)) p.user = *u;
    r.read("args", p.args);
    r.read("commandLine", p.command_line);
    r.read("env", p.env);
    r.require("cwd", p.cwd);
    p.capabilities = r.object("capabilities", read_capabilities);
    p.rlimits = r.list_of("rlimits", read_rlimit);
    r.read("noNewPrivileges", p.no_new_privileges);
    r.read("apparmorProfile", p.apparmor_profile);
    r.read("oomScoreAdj", p.oom_score_adj);
    p.scheduler = r.object("scheduler", read_scheduler);
    r.read("selinuxLabel", p.selinux_label);
    p.io_priority = r.object("ioPriority", read_io_priority);
    p.exec_cpu_affinity = r.object("execCPUAffinity", read_exec_cpu_affinity);
    return p;
}

Process parse_process(std::string_view text, std::string_view source) {
    json j = detail::parse_json(text, source);
    try {
        Reader r(j, "");
        r.expect_object();
        Process p = detail::read_process(r);
        detail::validate_process(p, "");
        return p;
    } catch (const Error& e) {
        throw e.wrapped(std::string(source));
    }
}

nlohmann::json to_json(const Process& p) {
    using detail::put_if;
    json j = json::object();
    if (p.terminal) j["terminal"] = true;
    if (p.console_size)
        j["consoleSize"] = {{"height", p.console_size->height}, {"width", p.console_size->width}};

    // uid and gid are REQUIRED members of user on Linux, so they are always written.
    json user = {{"uid", p.user.uid}, {"gid", p.user.gid}};
    put_if(user, "umask", p.user.umask);
    put_if(user, "additionalGids", p.user.additional_gids);
    put_if(user, "username", p.user.username);
    j["user"] = std::move(user);

    put_if(j, "args", p.args);
    put_if(j, "commandLine", p.command_line);
    put_if(j, "env", p.env);
    j["cwd"] = p.cwd;
    if (p.capabilities) {
        json caps = json::object();
        put_if(caps, "bounding", p.capabilities->bounding);
        put_if(caps, "effective", p.capabilities->effective);
        put_if(caps, "inheritable", p.capabilities->inheritable);
        put_if(caps, "permitted", p.capabilities->permitted);
        put_if(caps, "ambient", p.capabilities->ambient);
        j["capabilities"] = std::move(caps);
    }
    detail::put_list(j, "rlimits", p.rlimits, [](const Rlimit& l) {
        return json{{"type", l.type}, {"hard", l.hard}, {"soft", l.soft}};
    });
    if (p.no_new_privileges) j["noNewPrivileges"] = true;
    put_if(j, "apparmorProfile", p.apparmor_profile);
    put_if(j, "oomScoreAdj", p.oom_score_adj);
    if (p.scheduler) {
        json s = {{"policy", p.scheduler->policy}};
        put_if(s, "nice", p.scheduler->nice);
        put_if(s, "priority", p.scheduler->priority);
        put_if(s, "flags", p.scheduler->flags);
        put_if(s, "runtime", p.scheduler->runtime);
        put_if(s, "deadline", p.scheduler->deadline);
        put_if(s, "period", p.scheduler->period);
        j["scheduler"] = std::move(s);
    }
    put_if(j, "selinuxLabel", p.selinux_label);
    if (p.io_priority)
        j["ioPriority"] = {{"class", p.io_priority->klass}, {"priority", p.io_priority->priority}};
    if (p.exec_cpu_affinity) {
        json a = json::object();
        put_if(a, "initial", p.exec_cpu_affinity->initial);
        put_if(a, "final", p.exec_cpu_affinity->final);
        j["execCPUAffinity"] = std::move(a);
    }
    return j;
}

}  // namespace tarn::oci
