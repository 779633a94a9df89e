//! One driver per run: a lease row in the store, taken before a driver acts, renewed while it drives,
//! released when it stops or parks.
//!
//! The lease is advisory; the fence is the journal itself. Events are keyed `(run_id, seq)`, so two
//! drivers that both believe they hold a run cannot both append the same next event: the second commit
//! fails on the key and that driver stops. The lease only keeps that from being the usual case.
//!
//! A holder names itself so another process can tell whether it is certainly dead: the kernel's boot
//! id, its PID namespace, its PID and that process's start time. Only a holder on the same boot and in
//! the same PID namespace can be checked through `/proc`; any other (another host, a container sharing
//! the hostname) is waited out until its lease expires.

use super::event::now_ms;
use crate::store::{Store, StoreError};

/// How long a run's lease lasts without renewal, and how often a driver renews it.
pub const TTL_MS: i64 = 15_000;
pub const RENEW: std::time::Duration = std::time::Duration::from_secs(5);

/// Who holds a lease, as written in the store: `host/boot/pidns/pid/start:nonce`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`, or empty where it cannot be read.
    pub boot: String,
    /// The inode of `/proc/self/ns/pid`, or empty.
    pub pidns: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22), or 0.
    pub start: u64,
    pub nonce: String,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn pid_namespace() -> String {
    // `pid:[4026531836]`: the bracketed inode identifies the namespace.
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|p| {
            let s = p.to_string_lossy().into_owned();
            let inner = s.split_once('[')?.1.strip_suffix(']')?.to_string();
            Some(inner)
        })
        .unwrap_or_default()
}

pub use runbook_steps::process::start_time;

impl Holder {
    /// This process, with a fresh nonce (so two drivers in one process are told apart).
    pub fn this_process() -> Holder {
        let pid = std::process::id();
        let nonce = uuid::Uuid::now_v7().simple().to_string();
        Holder {
            host: read_trim("/proc/sys/kernel/hostname"),
            boot: runbook_steps::process::boot_id(),
            pidns: pid_namespace(),
            pid,
            start: start_time(pid).unwrap_or(0),
            nonce: nonce[24..].to_string(),
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}:{}",
            self.host.replace(['/', ':'], "_"),
            self.boot,
            self.pidns,
            self.pid,
            self.start,
            self.nonce
        )
    }

    /// Reads a holder name; `None` for names of another form (older versions wrote `host:pid:nonce`).
    pub fn decode(s: &str) -> Option<Holder> {
        let (ids, nonce) = s.rsplit_once(':')?;
        let mut parts = ids.split('/');
        let h = Holder {
            host: parts.next()?.to_string(),
            boot: parts.next()?.to_string(),
            pidns: parts.next()?.to_string(),
            pid: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
            nonce: nonce.to_string(),
        };
        parts.next().is_none().then_some(h)
    }

    /// How the holder reads in messages: `host pid 1234`.
    pub fn describe(s: &str) -> String {
        match Holder::decode(s) {
            Some(h) => format!("{} (pid {})", h.host, h.pid),
            None => s.to_string(),
        }
    }
}

/// Whether `other` is certainly a process that no longer exists, judged from `me`'s view. Only a
/// holder on the same boot and in the same PID namespace can be judged; its PID must be gone, or be
/// another process now (a different start time).
pub fn is_dead(me: &Holder, other: &str, start_of: impl Fn(u32) -> Option<u64>) -> bool {
    let Some(o) = Holder::decode(other) else {
        return false;
    };
    if o.boot.is_empty() || o.boot != me.boot || o.pidns.is_empty() || o.pidns != me.pidns {
        return false;
    }
    if o.pid == me.pid && o.start == me.start {
        // Another driver of this very process: alive by definition.
        return false;
    }
    match start_of(o.pid) {
        None => true,
        Some(t) => o.start != 0 && t != o.start,
    }
}

/// Whether a live process drives the run now: an unexpired lease whose holder is not a process of
/// this host known to be dead.
pub async fn driven(store: &dyn Store, run_id: &str) -> Result<bool, StoreError> {
    let me = Holder::this_process();
    Ok(store
        .lease(run_id)
        .await?
        .is_some_and(|(holder, until)| until > now_ms() && !is_dead(&me, &holder, start_time)))
}

/// Takes the run's lease for `me`, or explains who has it.
pub async fn take(store: &dyn Store, run_id: &str, me: &Holder) -> Result<(), LeaseError> {
    let name = me.encode();
    let stale = store
        .lease(run_id)
        .await?
        .map(|(h, _)| h)
        .filter(|h| is_dead(me, h, start_time));
    let now = now_ms();
    match store
        .acquire_lease(run_id, &name, now, now + TTL_MS, stale.as_deref())
        .await?
    {
        None => Ok(()),
        Some((other, until)) => Err(LeaseError::Held {
            run_id: run_id.to_string(),
            holder: Holder::describe(&other),
            secs_left: (until - now).max(0) / 1000,
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "run {run_id} is being driven by {holder} (its lease runs for another {secs_left}s); a run is driven by one process at a time"
    )]
    Held {
        run_id: String,
        holder: String,
        secs_left: i64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Holder {
        Holder {
            host: "h".into(),
            boot: "b1".into(),
            pidns: "4026531836".into(),
            pid: 100,
            start: 5000,
            nonce: "abcd".into(),
        }
    }

    #[test]
    fn names_round_trip_even_with_odd_hostnames() {
        let mut h = me();
        h.host = "web:1/a".into();
        let back = Holder::decode(&h.encode()).expect("decodes");
        assert_eq!(back.host, "web_1_a");
        assert_eq!((back.pid, back.start, back.boot), (100, 5000, "b1".into()));
        assert!(Holder::decode("oldhost:123:abcd").is_none());
    }

    #[test]
    fn only_a_holder_on_this_boot_and_namespace_can_be_judged_dead() {
        let me = me();
        let mut o = me.clone();
        o.pid = 200;
        o.start = 7000;
        let gone = |_| None;
        assert!(is_dead(&me, &o.encode(), gone));
        // The PID lives, but it is another process now.
        assert!(is_dead(&me, &o.encode(), |_| Some(9999)));
        assert!(!is_dead(&me, &o.encode(), |_| Some(7000)));
        // Another PID namespace (a container with the same hostname) or another boot: wait it out.
        let mut other_ns = o.clone();
        other_ns.pidns = "4026532000".into();
        assert!(!is_dead(&me, &other_ns.encode(), gone));
        let mut other_boot = o.clone();
        other_boot.boot = "b2".into();
        assert!(!is_dead(&me, &other_boot.encode(), gone));
        // Unknown formats are never judged dead.
        assert!(!is_dead(&me, "h:200:abcd", gone));
        // Another driver in this very process is alive.
        let mut sibling = me.clone();
        sibling.nonce = "ffff".into();
        assert!(!is_dead(&me, &sibling.encode(), gone));
    }

    #[test]
    fn this_process_reads_its_own_identity() {
        let h = Holder::this_process();
        assert_eq!(h.pid, std::process::id());
        assert_eq!(start_time(h.pid), Some(h.start));
        assert!(!h.boot.is_empty(), "boot id is readable on Linux");
    }
}
