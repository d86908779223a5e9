//! One integration test binary (fast to build): each module drives the real
//! `hamn` binary on generated temp trees, as an admin would.

#[path = "integration/common.rs"]
mod common;

#[path = "integration/cli_errors.rs"]
mod cli_errors;
#[path = "integration/crash.rs"]
mod crash;
#[path = "integration/damage.rs"]
mod damage;
#[path = "integration/diff.rs"]
mod diff;
#[path = "integration/fanout.rs"]
mod fanout;
#[path = "integration/fidelity.rs"]
mod fidelity;
#[path = "integration/gc.rs"]
mod gc;
#[path = "integration/gzip_aware.rs"]
mod gzip_aware;
#[path = "integration/lock.rs"]
mod lock;
#[path = "integration/materialize.rs"]
mod materialize;
#[path = "integration/old_stores.rs"]
mod old_stores;
#[path = "integration/operator.rs"]
mod operator;
#[path = "integration/proptest_changes.rs"]
mod proptest_changes;
#[path = "integration/proptest_deploy.rs"]
mod proptest_deploy;
#[path = "integration/push.rs"]
mod push;
#[path = "integration/serve_hostile.rs"]
mod serve_hostile;
#[path = "integration/snapshot.rs"]
mod snapshot;
#[path = "integration/sshd.rs"]
mod sshd;
