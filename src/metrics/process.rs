//! `process_*` metrics, read from `/proc/self` at scrape time: what every
//! Prometheus client library exports and every dashboard expects. On a
//! system without `/proc` they are simply absent.

use std::fs;

/// Clock ticks per second of `/proc/self/stat`'s times: `USER_HZ`, fixed
/// at 100 by the kernel's ABI on every architecture Linux exports it for.
const USER_HZ: f64 = 100.0;

/// One reading of the process's resources.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

impl ProcessStats {
    pub fn read() -> Self {
        Self {
            cpu_seconds: fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|s| cpu_seconds(&s)),
            resident_bytes: fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| resident_bytes(&s)),
            open_fds: open_fds(),
        }
    }
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its last `)`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After `)`: field 3 (state) is index 0, so utime (14) is 11, stime (15) 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Open file descriptors. Since Linux 6.2 the size of `/proc/self/fd` is
/// their count: one `stat`, whatever the number of sessions. Older kernels
/// report 0 there, and the directory is counted instead.
fn open_fds() -> Option<u64> {
    let size = fs::metadata("/proc/self/fd").ok()?.len();
    if size > 0 {
        return Some(size);
    }
    Some(fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_lines() {
        let stat =
            "4242 (ws gate) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(cpu_seconds("garbage"), None);
        let status = "Name:\twsgate\nVmPeak:\t 9999 kB\nVmRSS:\t   2048 kB\nThreads:\t9\n";
        assert_eq!(resident_bytes(status), Some(2048 * 1024));
        assert_eq!(resident_bytes("Name: x\n"), None);
    }

    #[test]
    fn reads_this_process() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let s = ProcessStats::read();
        assert!(s.resident_bytes.is_some_and(|b| b > 0), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(s.cpu_seconds.is_some(), "{s:?}");
    }
}
