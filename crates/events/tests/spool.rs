#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::{
    Event, ReadError, Reader, Recorded, Since, Spool, SpoolError, SpoolOptions, Value,
    ATTR_LOST_COUNT, ATTR_SENSOR_NAME, NETWORK_CONNECT, PROCESS_EXEC, SENSOR_LOSS, SPOOL_FILE,
};

fn exec(pid: i64) -> Event {
    Event::new(PROCESS_EXEC).with("process.pid", pid)
}

fn read_all(dir: &std::path::Path) -> Vec<Event> {
    Reader::open(dir).unwrap().map(Result::unwrap).collect()
}

fn pids(events: &[Event]) -> Vec<i64> {
    events
        .iter()
        .map(|e| match e.attributes.get("process.pid") {
            Some(Value::Int(pid)) => *pid,
            _ => -1,
        })
        .collect()
}

#[test]
fn spool_numbers_events_in_order_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    assert_eq!(spool.recovery().next_sequence, 1);
    let recorder = spool.recorder("exec");
    for pid in 1..=5 {
        assert_eq!(recorder.record(exec(pid)), Recorded::Queued);
    }
    let stats = spool.close().unwrap();
    assert_eq!((stats.written, stats.lost, stats.next_sequence), (5, 0, 6));

    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    assert_eq!(spool.recovery().next_sequence, 6);
    assert_eq!(spool.recovery().truncated_bytes, 0);
    let recorder = spool.recorder("exec");
    for pid in 6..=8 {
        recorder.record(exec(pid));
    }
    spool.close().unwrap();

    let events = read_all(dir.path());
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=8).collect::<Vec<_>>());
    assert_eq!(pids(&events), (1..=8).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e.name == PROCESS_EXEC));
}

#[test]
fn spool_refuses_a_second_writer_of_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    let err = Spool::open(dir.path(), SpoolOptions::default()).unwrap_err();
    assert!(matches!(err, SpoolError::Busy { .. }), "{err}");
}

#[test]
fn torn_last_line_is_truncated_on_reopen_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    let recorder = spool.recorder("exec");
    for pid in 1..=3 {
        recorder.record(exec(pid));
    }
    spool.close().unwrap();
    let path = dir.path().join(SPOOL_FILE);
    let whole = std::fs::read(&path).unwrap();

    // A crash in the middle of writing event 4.
    let torn = br#"{"sequence":4,"time_unix_nano":17,"event.na"#;
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(torn)
        .unwrap();
    // Readers never see the torn line.
    assert_eq!(read_all(dir.path()).len(), 3);

    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    assert_eq!(spool.recovery().truncated_bytes, torn.len() as u64);
    assert_eq!(spool.recovery().next_sequence, 4);
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    spool.recorder("exec").record(exec(4));
    spool.close().unwrap();

    let events = read_all(dir.path());
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(pids(&events), [1, 2, 3, 4]);
}

#[test]
fn a_spool_that_is_only_a_torn_line_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(SPOOL_FILE), b"{\"seq").unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    assert_eq!(spool.recovery().truncated_bytes, 5);
    assert_eq!(spool.recovery().next_sequence, 1);
}

#[test]
fn corrupt_last_whole_line_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    spool.recorder("exec").record(exec(1));
    spool.close().unwrap();
    let path = dir.path().join(SPOOL_FILE);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"not json\n")
        .unwrap();

    let err = Spool::open(dir.path(), SpoolOptions::default()).unwrap_err();
    match &err {
        SpoolError::Corrupt { path: p, line, .. } => {
            assert_eq!(p, &path);
            assert_eq!(*line, 2);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("events.jsonl: line 2"), "{err}");

    let results: Vec<_> = Reader::open(dir.path()).unwrap().collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    match &results[1] {
        Err(ReadError::Corrupt { line, .. }) => assert_eq!(*line, 2),
        other => panic!("unexpected {other:?}"),
    }
}

/// Holds the writer inside its first write until released, and says when it got there.
struct Gate {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
}

#[test]
fn full_queue_counts_loss_and_reports_it_as_a_sensor_loss_event() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(release_rx),
    });
    let hook_gate = Arc::clone(&gate);
    let options = SpoolOptions::default()
        .queue_capacity(2)
        .before_write(move |_event| {
            // Only the first write waits.
            if let Some(entered) = hook_gate.entered.lock().unwrap().take() {
                entered.send(()).unwrap();
                hook_gate.release.lock().unwrap().recv().unwrap();
            }
        });
    let spool = Spool::open(dir.path(), options).unwrap();
    let proxy = spool.recorder("netproxy");
    let exec_sensor = spool.recorder("exec");

    assert_eq!(exec_sensor.record(exec(1)), Recorded::Queued);
    // The writer holds event 1 and the queue is empty.
    entered_rx.recv().unwrap();
    assert_eq!(exec_sensor.record(exec(2)), Recorded::Queued);
    assert_eq!(exec_sensor.record(exec(3)), Recorded::Queued);
    // The queue (2) is full: these are lost, three from the proxy and one from exec.
    let connect = || Event::new(NETWORK_CONNECT).with("server.address", "example.com");
    assert_eq!(proxy.record(connect()), Recorded::Dropped);
    assert_eq!(proxy.record(connect()), Recorded::Dropped);
    assert_eq!(exec_sensor.record(exec(99)), Recorded::Dropped);
    assert_eq!(proxy.record(connect()), Recorded::Dropped);
    assert_eq!(proxy.lost(), 4);
    release_tx.send(()).unwrap();
    let stats = spool.close().unwrap();
    assert_eq!(stats.lost, 4);

    let events = read_all(dir.path());
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=events.len() as u64).collect::<Vec<_>>());
    let execs: Vec<&Event> = events.iter().filter(|e| e.name == PROCESS_EXEC).collect();
    assert_eq!(execs.len(), 3);
    assert_eq!(
        pids(&events)
            .into_iter()
            .filter(|p| *p > 0)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let losses: Vec<(String, i64, u64)> = events
        .iter()
        .filter(|e| e.name == SENSOR_LOSS)
        .map(|e| {
            let Some(Value::String(sensor)) = e.attributes.get(ATTR_SENSOR_NAME) else {
                panic!("no sensor name in {e:?}")
            };
            let Some(Value::Int(count)) = e.attributes.get(ATTR_LOST_COUNT) else {
                panic!("no lost count in {e:?}")
            };
            (sensor.clone(), *count, e.sequence)
        })
        .collect();
    let mut by_sensor: Vec<(String, i64)> =
        losses.iter().map(|(s, c, _)| (s.clone(), *c)).collect();
    by_sensor.sort();
    assert_eq!(
        by_sensor,
        [("exec".to_owned(), 1), ("netproxy".to_owned(), 3)]
    );
    // Reported as soon as the writer ran again: right after event 1, before 2 and 3.
    assert!(
        losses.iter().all(|(_, _, seq)| *seq == 2 || *seq == 3),
        "{losses:?}"
    );
}

#[test]
fn reader_since_sequence_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    let recorder = spool.recorder("exec");
    for pid in 1..=6 {
        recorder.record(exec(pid).at(1_000 * pid as u64));
    }
    spool.close().unwrap();

    let seqs = |since| -> Vec<u64> {
        Reader::open(dir.path())
            .unwrap()
            .since(since)
            .map(|e| e.unwrap().sequence)
            .collect()
    };
    assert_eq!(seqs(Since::Start), [1, 2, 3, 4, 5, 6]);
    assert_eq!(seqs(Since::Sequence(4)), [4, 5, 6]);
    assert_eq!(seqs(Since::Sequence(7)), Vec::<u64>::new());
    assert_eq!(seqs(Since::TimeUnixNano(2_500)), [3, 4, 5, 6]);
}

#[test]
fn reader_follows_a_spool_while_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    let recorder = spool.recorder("exec");
    recorder.record(exec(1));
    let reader = Reader::open(dir.path())
        .unwrap()
        .since(Since::Sequence(1))
        .follow(Duration::from_millis(5));
    let stop = reader.stop_handle();

    // The reader hands each event to the writer side, which records the next one only then:
    // every event after the first was appended while the reader was following.
    let (seen_tx, seen_rx) = mpsc::channel::<u64>();
    let follower = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for event in reader {
            let event = event.unwrap();
            seen.push(event.sequence);
            seen_tx.send(event.sequence).unwrap();
        }
        seen
    });
    let writer = std::thread::spawn(move || {
        for pid in 2..=20 {
            let sequence = seen_rx.recv().unwrap();
            assert_eq!(sequence, pid as u64 - 1);
            recorder.record(exec(pid));
        }
        assert_eq!(seen_rx.recv().unwrap(), 20);
        stop.stop();
    });
    writer.join().unwrap();
    let seen = follower.join().unwrap();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    spool.close().unwrap();
}

#[test]
fn a_stopped_follower_still_returns_what_was_written_before_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    let recorder = spool.recorder("exec");
    for pid in 1..=5 {
        recorder.record(exec(pid));
    }
    spool.close().unwrap();
    let reader = Reader::open(dir.path())
        .unwrap()
        .follow(Duration::from_secs(3600));
    // Stopped before it read anything (an exporter told to stop as the sandbox ends).
    reader.stop_handle().stop();
    let seqs: Vec<u64> = reader.map(|e| e.unwrap().sequence).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[test]
fn follower_skips_a_torn_tail_truncated_by_a_reopening_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    spool.recorder("exec").record(exec(1));
    spool.close().unwrap();
    let path = dir.path().join(SPOOL_FILE);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"sequence\":2,\"ti")
        .unwrap();

    let mut reader = Reader::open(dir.path())
        .unwrap()
        .follow(Duration::from_millis(5));
    assert_eq!(reader.next().unwrap().unwrap().sequence, 1);
    // The follower now holds the torn bytes and waits for the rest of the line.
    let follower = std::thread::spawn(move || reader.next().unwrap().unwrap());

    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    spool
        .recorder("exec")
        .record(exec(2).with("padding", "x".repeat(200)));
    spool.close().unwrap();
    let event = follower.join().unwrap();
    assert_eq!(event.sequence, 2);
    assert_eq!(pids(&[event]), [2]);
}
