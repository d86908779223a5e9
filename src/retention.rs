//! Which snapshots a retention policy keeps, and why. Planning is pure;
//! `forget` then deletes the records of the others (their data goes at the
//! next `gc`). Never forgotten whatever the policy: the newest snapshot
//! (also when the clock went backwards: the last of each parent chain),
//! and the snapshots a deployment on this node still uses.

use std::collections::{BTreeMap, HashSet};

use chrono::Datelike;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::snapshot::Snapshot;
use crate::store::{Store, StoreLock};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_tags: Vec<String>,
}

impl Policy {
    pub fn from_config(r: &crate::config::Retention) -> Policy {
        Policy {
            keep_last: r.keep_last.unwrap_or(0),
            keep_daily: r.keep_daily.unwrap_or(0),
            keep_weekly: r.keep_weekly.unwrap_or(0),
            keep_monthly: r.keep_monthly.unwrap_or(0),
            keep_tags: r.keep_tags.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_tags.is_empty()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    pub id: SnapshotId,
    pub time: String,
    pub keep: bool,
    /// Why it is kept ("last 1", "daily 2026-11-24", "deployed", ...).
    pub reasons: Vec<String>,
}

/// Decide for every snapshot (newest first) whether the policy keeps it.
pub fn plan(
    all: &[(SnapshotId, Snapshot)],
    policy: &Policy,
    pinned: &[(SnapshotId, String)],
) -> Result<Vec<Decision>> {
    if policy.is_empty() {
        return Err(Error::Usage(
            "no retention policy: give --keep-last/--keep-daily/--keep-weekly/--keep-monthly/--keep-tag \
             or set [retention] in the config (refusing to forget everything)"
                .into(),
        ));
    }
    let mut order: Vec<&(SnapshotId, Snapshot)> = all.iter().collect();
    order.sort_by_key(|(id, s)| std::cmp::Reverse((s.time_ns, *id)));
    let parents: HashSet<SnapshotId> = all.iter().filter_map(|(_, s)| s.parent).collect();
    let mut reasons: BTreeMap<SnapshotId, Vec<String>> = BTreeMap::new();
    let mut add = |id: SnapshotId, why: String| reasons.entry(id).or_default().push(why);

    if let Some((id, _)) = order.first() {
        add(*id, "newest".into());
    }
    // A snapshot stamped earlier than its parent was taken after a clock
    // went backwards; while it is the last of its chain it is the newest in
    // fact, whatever the times say.
    let time_of: BTreeMap<SnapshotId, i64> = all.iter().map(|(id, s)| (*id, s.time_ns)).collect();
    for (id, s) in all {
        let older_than_parent = s
            .parent
            .and_then(|p| time_of.get(&p))
            .is_some_and(|pt| *pt > s.time_ns);
        if !parents.contains(id) && older_than_parent {
            add(*id, "newest (clock went backwards)".into());
        }
    }
    for (id, why) in pinned {
        if all.iter().any(|(i, _)| i == id) {
            add(*id, (*why).to_string());
        }
    }
    for (i, (id, _)) in order.iter().enumerate() {
        if i < policy.keep_last as usize {
            add(*id, format!("last {}", i + 1));
        }
    }
    let mut bucket = |n: u32, label: &str, key: &dyn Fn(&Snapshot) -> String| {
        let mut seen: Vec<String> = Vec::new();
        for (id, s) in &order {
            if seen.len() >= n as usize {
                break;
            }
            let k = key(s);
            if !seen.contains(&k) {
                add(*id, format!("{label} {k}"));
                seen.push(k);
            }
        }
    };
    bucket(policy.keep_daily, "daily", &|s| {
        s.time_local().format("%Y-%m-%d").to_string()
    });
    bucket(policy.keep_weekly, "weekly", &|s| {
        let w = s.time_local().iso_week();
        format!("{}-W{:02}", w.year(), w.week())
    });
    bucket(policy.keep_monthly, "monthly", &|s| {
        s.time_local().format("%Y-%m").to_string()
    });
    for (id, s) in &order {
        for t in &s.tags {
            if policy.keep_tags.contains(t) {
                add(*id, format!("tag {t}"));
            }
        }
    }
    Ok(order
        .iter()
        .map(|(id, s)| {
            let r = reasons.remove(id).unwrap_or_default();
            Decision {
                id: *id,
                time: s
                    .time_local()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                keep: !r.is_empty(),
                reasons: r,
            }
        })
        .collect())
}

/// The snapshots retention never forgets whatever the policy, with why:
/// those a deployment in this store uses (deployed, previous generation),
/// and on a primary the newest one each node it syncs is known to hold,
/// which that node's next push builds on (its delta bases), however long
/// the node has been down.
pub fn pinned(store: &Store) -> Result<Vec<(SnapshotId, String)>> {
    let mut out: Vec<(SnapshotId, String)> = crate::deploy::state::pinned(store)?
        .into_iter()
        .map(|(id, why)| (id, why.to_string()))
        .collect();
    for n in crate::nodes::all(store)? {
        if let Some(id) = n.newest {
            out.push((id, format!("newest on node {}", n.name)));
        }
    }
    Ok(out)
}

/// What applying a policy did: snapshots forgotten, then gc.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetentionReport {
    pub forgotten: u64,
    pub gc: crate::gc::GcStats,
}

/// Apply `policy` to the store: forget what it does not keep (never a
/// snapshot a deployment here still needs), then collect the data no
/// snapshot references any more, older than `grace`. The nightly job on
/// the primary and `hamn serve` on the standby both come here.
pub fn apply(
    store: &Store,
    lock: &StoreLock,
    policy: &Policy,
    grace: std::time::Duration,
) -> Result<RetentionReport> {
    let decisions = plan(&store.snapshots()?, policy, &pinned(store)?)?;
    let forgotten = forget(store, lock, &decisions)?;
    let gc = crate::gc::execute(store, lock, crate::gc::plan(store, grace)?)?;
    Ok(RetentionReport { forgotten, gc })
}

/// Delete the records of the snapshots the plan does not keep.
pub fn forget(store: &Store, _lock: &StoreLock, decisions: &[Decision]) -> Result<u64> {
    let mut n = 0;
    for d in decisions.iter().filter(|d| !d.keep) {
        store.remove_snapshot(d.id)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::TreeId;
    use crate::snapshot::SnapshotStats;

    const DAY: i64 = 86_400 * 1_000_000_000;

    /// A chain of snapshots at the given day offsets (in creation order).
    fn chain(days: &[i64], tags: &[(usize, &str)]) -> Vec<(SnapshotId, Snapshot)> {
        let mut out: Vec<(SnapshotId, Snapshot)> = Vec::new();
        let base = 1_760_000_000i64 * 1_000_000_000; // a Wednesday in October 2025
        for (i, d) in days.iter().enumerate() {
            let s = Snapshot {
                time_ns: base + d * DAY + 7_200_000_000_000,
                host: "mn1".into(),
                paths: vec!["/install".into()],
                root: TreeId([i as u8; 32]),
                parent: out.last().map(|(id, _)| *id),
                tags: tags
                    .iter()
                    .filter(|(j, _)| *j == i)
                    .map(|(_, t)| t.to_string())
                    .collect(),
                stats: SnapshotStats::default(),
            };
            out.push((SnapshotId::of(&s.encode()), s));
        }
        out
    }

    fn kept(d: &[Decision]) -> usize {
        d.iter().filter(|x| x.keep).count()
    }

    #[test]
    fn daily_weekly_monthly_buckets() {
        let all = chain(&(0..90).collect::<Vec<_>>(), &[]);
        let p = |l, d, w, m| Policy {
            keep_last: l,
            keep_daily: d,
            keep_weekly: w,
            keep_monthly: m,
            keep_tags: vec![],
        };
        assert_eq!(kept(&plan(&all, &p(3, 0, 0, 0), &[]).unwrap()), 3);
        assert_eq!(kept(&plan(&all, &p(0, 7, 0, 0), &[]).unwrap()), 7);
        // 7 daily + 4 weekly overlap in the newest week.
        let d = plan(&all, &p(0, 7, 4, 0), &[]).unwrap();
        assert!((8..=11).contains(&kept(&d)), "{}", kept(&d));
        let d = plan(&all, &p(0, 0, 0, 3), &[]).unwrap();
        assert_eq!(kept(&d), 3);
        assert!(d.iter().filter(|x| x.keep).all(|x| {
            x.reasons
                .iter()
                .any(|r| r.starts_with("monthly") || r == "newest")
        }));
    }

    #[test]
    fn newest_tags_and_deployments_are_always_kept() {
        let all = chain(&[0, 1, 2, 3, 4], &[(1, "before-upgrade")]);
        let pinned = [(all[0].0, "previous generation".to_string())];
        let p = Policy {
            keep_last: 1,
            keep_tags: vec!["before-upgrade".into()],
            ..Policy::default()
        };
        let d = plan(&all, &p, &pinned).unwrap();
        let keep: Vec<SnapshotId> = d.iter().filter(|x| x.keep).map(|x| x.id).collect();
        assert_eq!(keep.len(), 3);
        assert!(keep.contains(&all[4].0) && keep.contains(&all[1].0) && keep.contains(&all[0].0));
        // Once its children are forgotten, a tagged snapshot is no longer
        // kept by anything but its tag.
        let rest: Vec<_> = all
            .iter()
            .filter(|(id, _)| keep.contains(id))
            .cloned()
            .collect();
        let p = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let d = plan(&rest, &p, &[]).unwrap();
        assert_eq!(kept(&d), 1, "{d:?}");
    }

    #[test]
    fn the_last_snapshot_survives_a_clock_that_went_backwards() {
        // Created last, but stamped a week earlier than the others.
        let all = chain(&[10, 11, 12, 13, 4], &[]);
        let p = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let d = plan(&all, &p, &[]).unwrap();
        let last = all[4].0;
        assert!(d.iter().any(|x| x.id == last && x.keep), "{d:?}");
    }

    #[test]
    fn an_empty_policy_forgets_nothing() {
        let all = chain(&[0, 1], &[]);
        assert!(plan(&all, &Policy::default(), &[]).is_err());
    }
}
