//! What the runner reads from Linux about a process: CPU time from
//! `/proc/PID/stat` (utime + stime), resident memory from `/proc/PID/statm`;
//! and what it sets: the open-file limit and CPU affinity.

use std::fs;

use anyhow::Context as _;

/// CPU time (user + system) used so far by process `pid` (`"self"` for
/// this one), in seconds. Resolution: one clock tick (10 ms).
pub(crate) fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).context("read /proc/PID/stat")?;
    // The command name may contain spaces; the fields after it do not.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are utime and stime; `rest` starts at field 3.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) as f64 / clock_ticks() as f64)
}

/// Resident memory of process `pid`, in bytes.
pub(crate) fn rss_bytes(pid: &str) -> anyhow::Result<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).context("read /proc/PID/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("malformed statm")?
        .parse()?;
    Ok(pages * page_size())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// Raises the soft open-file limit to the hard limit (10,000 connections
/// need more than the usual 1,024). Returns the new soft limit.
pub(crate) fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard
    // one needs no privilege.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    lim.rlim_cur
}

/// Pins the calling thread (and the threads it creates later) to `cpu`.
pub(crate) fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    pin_to_cpus(cpu..cpu + 1)
}

/// Pins the calling thread (and the threads it creates later) to `cpus`.
pub(crate) fn pin_to_cpus(cpus: std::ops::Range<usize>) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus {
        // SAFETY: `cpu` is below CPU_SETSIZE on any machine we run on
        // (checked by the caller against the number of CPUs).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        anyhow::bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The number of CPUs this process may run on.
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_memory() {
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(rss_bytes("self").unwrap() > 0);
    }
}
