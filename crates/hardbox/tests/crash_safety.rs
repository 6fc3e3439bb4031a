//! Crash safety: `hardbox image import` is killed with SIGKILL at random points, many times.
//! After every kill `system fsck` must pass, and the import must still succeed when repeated.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{hardbox, repo_root, run_ok};

/// A small xorshift generator; the seed is printed so a failure can be replayed.
struct Random(u64);

impl Random {
    fn next_below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// Makes a layout with a layer of many files and ~24 MiB, plus an OCI archive of it.
fn fixture(work: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let rootfs = work.join("rootfs");
    for d in 0..40 {
        let dir = rootfs.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            // Incompressible-ish content so gzip and hashing take real time.
            let mut x = (d * 1000 + f + 1) as u64;
            let bytes: Vec<u8> = (0..12_000)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 33) as u8
                })
                .collect();
            std::fs::write(dir.join(format!("f{f}")), bytes).unwrap();
        }
    }
    // The layer records mtime 0 (scripts/make-oci-layout); make the reference tree match.
    run_ok(
        Command::new("find")
            .arg(&rootfs)
            .args(["-exec", "touch", "-h", "-d", "@0", "{}", "+"]),
    );
    let layout = work.join("layout");
    run_ok(
        Command::new(repo_root().join("scripts/make-oci-layout"))
            .arg(&rootfs)
            .arg(&layout)
            .arg("crash:1")
            .arg("gzip"),
    );
    let archive = work.join("layout.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    );
    (layout, archive)
}

#[test]
fn import_killed_at_random_points_leaves_a_consistent_store() {
    let work = tempfile::tempdir().unwrap();
    let (layout, archive) = fixture(work.path());
    let store = work.path().join("store");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed: {seed}");
    let mut random = Random(seed);

    // How long one import takes here, to spread the kill points over it.
    let probe_store = work.path().join("probe-store");
    let started = Instant::now();
    run_ok(
        hardbox(&probe_store)
            .args(["image", "import"])
            .arg(&archive),
    );
    let full = started.elapsed().as_micros().max(1_000) as u64;

    for round in 0..30 {
        let source = if round % 2 == 0 { &archive } else { &layout };
        let mut child = hardbox(&store)
            .args(["image", "import"])
            .arg(source)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(random.next_below(full)));
        let _ = child.kill();
        let _ = child.wait();

        let fsck = hardbox(&store).args(["system", "fsck"]).output().unwrap();
        assert!(
            fsck.status.success(),
            "round {round} (seed {seed}): fsck failed after a kill:\n{}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
    }

    run_ok(hardbox(&store).args(["image", "import"]).arg(&archive));
    run_ok(hardbox(&store).args(["image", "import"]).arg(&layout));
    run_ok(hardbox(&store).args(["system", "gc"]));
    run_ok(hardbox(&store).args(["system", "fsck"]));
    let out = work.path().join("unpacked");
    run_ok(
        hardbox(&store)
            .args(["image", "unpack", "crash:1"])
            .arg(&out),
    );
    common::assert_same_tree(&work.path().join("rootfs"), &out);
    let leftovers: Vec<_> = std::fs::read_dir(store.join("tmp"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "gc left {leftovers:?} in tmp/");
}
