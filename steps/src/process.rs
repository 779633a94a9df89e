//! Processes a step started, as the engine journals them: so that after the engine itself was
//! killed, a resume can tell whether a command it left behind is still running, and stop it (or tell
//! the operator) rather than start a second copy beside it.

use std::time::Duration;

/// A process group a step started, identified so that a later process on the same machine can
/// recognise it: its id, the leader's start time (PIDs are reused) and the kernel's boot id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub pgid: u32,
    /// The leader's start time in clock ticks since boot (`/proc/PID/stat` field 22), or 0.
    pub start: u64,
    /// `/proc/sys/kernel/random/boot_id`, or empty.
    pub boot: String,
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted from the last `)`.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_string).collect())
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Group {
    /// The group led by `pid`, as this machine sees it now.
    pub fn of_leader(pid: u32) -> Group {
        Group {
            pgid: pid,
            start: start_time(pid).unwrap_or(0),
            boot: boot_id(),
        }
    }

    /// The live processes of this group (not zombies), when it was started on this boot. A group
    /// whose leader is gone may still have members; a leader with another start time is another
    /// process that reused the id, and its group is not this one.
    pub fn members(&self) -> Vec<u32> {
        if self.boot.is_empty() || self.boot != boot_id() {
            return Vec::new();
        }
        if let Some(now) = start_time(self.pgid)
            && self.start != 0
            && now != self.start
        {
            return Vec::new();
        }
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                stat_fields(pid).is_some_and(|f| {
                    // field 3 is the state, field 5 the process group.
                    f.first().is_some_and(|s| s != "Z" && s != "X")
                        && f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(self.pgid)
                })
            })
            .collect()
    }

    /// Stops the group: SIGTERM, then SIGKILL to whatever is left after `grace`. Returns how it
    /// ended: `gone` (nothing to stop), `terminated` or `killed`.
    pub async fn stop(&self, grace: Duration) -> &'static str {
        if self.members().is_empty() {
            return "gone";
        }
        let Ok(pgid) = i32::try_from(self.pgid) else {
            return "gone";
        };
        let group = nix::unistd::Pid::from_raw(pgid);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let step = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        while waited < grace {
            if self.members().is_empty() {
                return "terminated";
            }
            tokio::time::sleep(step).await;
            waited += step;
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        "killed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_is_seen_while_it_runs_and_stopped_on_request() {
        let child = std::process::Command::new("sh")
            .args(["-c", "sleep 600 & sleep 600"])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let g = Group::of_leader(child.id());
        assert!(
            g.members().len() >= 2 || !g.members().is_empty(),
            "{:?}",
            g.members()
        );
        // Another boot, or a recycled PID, is not this group.
        let other_boot = Group {
            boot: "x".into(),
            ..g.clone()
        };
        assert!(other_boot.members().is_empty());
        let recycled = Group {
            start: g.start + 1,
            ..g.clone()
        };
        assert!(recycled.members().is_empty());
        let how = g.stop(Duration::from_secs(5)).await;
        assert!(matches!(how, "terminated" | "killed"), "{how}");
        let mut child = child;
        let _ = child.wait();
        assert!(g.members().is_empty(), "{:?}", g.members());
        assert_eq!(g.stop(Duration::from_secs(1)).await, "gone");
    }

    use std::os::unix::process::CommandExt as _;
}
