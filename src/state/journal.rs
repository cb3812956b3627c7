//! The audit trail's durable local buffer: an append-only file in `server.state_dir` that holds
//! each request's AuditEvent before the answer leaves, while the audit writer moves the events
//! into the state store's hash chain behind it, many to a transaction.
//!
//! Why a file: committing to the store before every answer put a transaction (several trips to
//! SQLite's connection thread) on every request's path; a line written to a file is one system
//! call. The guarantee is unchanged: no answer leaves without a durable record of it. A line is
//! in the file before the answer leaves, which survives the process being killed, the class of
//! durability a SQLite store in WAL mode with `synchronous = NORMAL` gives its own commits.
//!
//! Layout: `audit-journal/<process>/<segment>.ndjson`, one directory per running process (a
//! rolling restart runs two at once), each holding a lock on its `lock` file while it lives, and
//! one `AuditRecord` as JSON per line, in the order the events join the chain. A segment is
//! closed at `SEGMENT_BYTES`; once the writer has committed a line of a later segment, the earlier
//! ones are deleted, and when it has committed every line written, the current one is emptied.
//! At start, `open` takes over the directories whose lock nobody holds (their process was
//! killed) and reads what they hold (a torn last line is dropped: its answer never left), for the
//! caller to append, by event id, the events the store does not have yet, and then delete them.
//! A process's directory is made under a hidden name and renamed once locked, so a starting
//! process never takes over one that is being born.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::audit::AuditRecord;

/// A segment is closed once it holds this many bytes.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
const EXTENSION: &str = "ndjson";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("audit journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "audit journal {path}, line {line}: not an audit event ({reason}); move the file aside to start, and append its events with care"
    )]
    Unreadable {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Where a line was written: its segment and its number among every line this process wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalPosition {
    pub segment: u64,
    pub line: u64,
}

/// The open journal; `append` is called with the writer's queue slot already reserved.
#[derive(Debug)]
pub struct AuditJournal {
    /// This process's own directory.
    dir: PathBuf,
    /// Held (locked) while the journal is open.
    _lock: File,
    current: Mutex<Segment>,
    /// The directories of killed processes taken over at `open`, locked, until
    /// `forget_recovered` deletes them.
    taken_over: Mutex<Vec<(PathBuf, File)>>,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    file: File,
    bytes: u64,
    /// The oldest segment file that may still exist.
    oldest: u64,
    /// Lines written by this process, all segments together.
    lines: u64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_owned();
    move |source| JournalError::Io { path, source }
}

/// Takes the lock of the directory `dir` (its `lock` file); `None` when a live process holds it.
fn take_lock(dir: &Path) -> Result<Option<File>, JournalError> {
    let path = dir.join("lock");
    let lock = File::create(&path).map_err(io_error(&path))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(source)) => Err(io_error(&path)(source)),
    }
}

impl AuditJournal {
    /// Opens a journal of this process's own in `root` (created when missing) and returns what
    /// killed processes left there, each one's oldest first. Their directories stay, locked,
    /// until `forget_recovered`.
    pub fn open(root: &Path) -> Result<(AuditJournal, Vec<AuditRecord>), JournalError> {
        std::fs::create_dir_all(root).map_err(io_error(root))?;
        let mut taken_over = Vec::new();
        let mut recovered = Vec::new();
        let mut left: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(io_error(root))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_dir() && !is_hidden(path))
            .collect();
        left.sort();
        for dir in left {
            let Some(lock) = take_lock(&dir)? else {
                continue;
            };
            let segments = segment_numbers(&dir).map_err(io_error(&dir))?;
            for (index, number) in segments.iter().enumerate() {
                let path = segment_path(&dir, *number);
                let text = std::fs::read(&path).map_err(io_error(&path))?;
                let newest = index + 1 == segments.len();
                recovered.extend(parse_segment(&path, &text, newest)?);
            }
            taken_over.push((dir, lock));
        }

        let name = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let born = root.join(format!(".{name}"));
        std::fs::create_dir(&born).map_err(io_error(&born))?;
        let lock = take_lock(&born)?.ok_or_else(|| JournalError::Io {
            path: born.clone(),
            source: std::io::Error::other("a new journal directory is locked by another process"),
        })?;
        let dir = root.join(name);
        std::fs::rename(&born, &dir).map_err(io_error(&dir))?;
        let path = segment_path(&dir, 0);
        let file = open_segment(&path).map_err(io_error(&path))?;
        let journal = AuditJournal {
            dir,
            _lock: lock,
            current: Mutex::new(Segment {
                number: 0,
                file,
                bytes: 0,
                oldest: 0,
                lines: 0,
            }),
            taken_over: Mutex::new(taken_over),
        };
        Ok((journal, recovered))
    }

    /// Deletes the directories of killed processes taken over at `open`, once their events are
    /// in the store.
    pub fn forget_recovered(&self) -> Result<(), JournalError> {
        let mut taken_over = self
            .taken_over
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (dir, _lock) in taken_over.drain(..) {
            std::fs::remove_dir_all(&dir).map_err(io_error(&dir))?;
        }
        Ok(())
    }

    /// Writes `record` as the next line, rotating to a new segment when this one is full.
    /// `then` runs under the journal's lock, so lines and whatever `then` queues keep one order.
    pub fn append<T>(
        &self,
        record: AuditRecord,
        then: impl FnOnce(AuditRecord, JournalPosition) -> T,
    ) -> Result<T, JournalError> {
        let line = journal_line(&record);
        let mut current = self.lock();
        if current.bytes >= SEGMENT_BYTES {
            let number = current.number + 1;
            let path = segment_path(&self.dir, number);
            current.file = open_segment(&path).map_err(io_error(&path))?;
            current.number = number;
            current.bytes = 0;
        }
        if let Err(source) = current.file.write_all(&line) {
            // A part of the line may have been written (a full disk): cut it off, so the next
            // line does not follow a damaged one, which would stop the next start.
            let _ = current.file.set_len(current.bytes);
            let path = segment_path(&self.dir, current.number);
            return Err(JournalError::Io { path, source });
        }
        current.bytes += line.len() as u64;
        current.lines += 1;
        let position = JournalPosition {
            segment: current.number,
            line: current.lines,
        };
        Ok(then(record, position))
    }

    /// Every line up to `position` is in the store: deletes the segments before its own, and
    /// empties the current one when nothing was written after it.
    pub fn committed(&self, position: JournalPosition) -> Result<(), JournalError> {
        let mut current = self.lock();
        if position.line == current.lines && current.bytes > 0 {
            let path = segment_path(&self.dir, current.number);
            current.file.set_len(0).map_err(io_error(&path))?;
            current.bytes = 0;
        }
        self.delete_before(&mut current, position.segment)
    }

    fn delete_before(&self, current: &mut Segment, number: u64) -> Result<(), JournalError> {
        while current.oldest < number.min(current.number) {
            let path = segment_path(&self.dir, current.oldest);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(io_error(&path)(source)),
            }
            current.oldest += 1;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Segment> {
        // A panic while holding it cannot leave a segment half-described: every field is set
        // after the write it describes succeeded.
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `record` as one line: its fields, then its resource as the JSON it is.
fn journal_line(record: &AuditRecord) -> Vec<u8> {
    let mut line = Vec::with_capacity(record.resource.len() + 512);
    serde_json::to_writer(&mut line, record).expect("an audit record serializes");
    // The fields end with the object's closing brace; the resource goes before it.
    line.pop();
    line.extend_from_slice(b",\"resource\":");
    line.extend_from_slice(record.resource.as_bytes());
    line.extend_from_slice(b"}\n");
    line
}

/// A journal line's `resource`: the AuditEvent's JSON as it stands in the line (or, from lines
/// written before it stood there, a string holding it).
pub(super) fn embedded_json<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    use serde::Deserialize;
    let raw = <Box<serde_json::value::RawValue>>::deserialize(deserializer)?;
    match raw.get() {
        text if text.starts_with('"') => {
            serde_json::from_str(text).map_err(serde::de::Error::custom)
        }
        text => Ok(text.to_owned()),
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_none_or(|name| name.starts_with('.'))
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.{EXTENSION}"))
}

fn open_segment(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The segment numbers in `dir`, ascending.
fn segment_numbers(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
            continue;
        }
        if let Some(number) = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The records of one segment file. Only the newest segment's last line may be torn (the
/// process was killed mid-write, before that request's answer left): it is dropped.
fn parse_segment(path: &Path, text: &[u8], newest: bool) -> Result<Vec<AuditRecord>, JournalError> {
    let mut records = Vec::new();
    let complete = text.ends_with(b"\n");
    let lines: Vec<&[u8]> = text
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    for (index, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<AuditRecord>(line) {
            Ok(record) => records.push(record),
            Err(_) if newest && !complete && index + 1 == lines.len() => {
                tracing::warn!(path = %path.display(), "audit journal: a torn last line is dropped");
            }
            Err(error) => {
                return Err(JournalError::Unreadable {
                    path: path.to_owned(),
                    line: index + 1,
                    reason: error.to_string(),
                });
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::audit::tests::record;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("portico-journal-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        dir
    }

    /// The process directories in `root`, hidden ones too.
    fn processes(root: &Path) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        dirs.sort();
        dirs
    }

    fn ids(records: &[AuditRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn what_a_killed_process_wrote_is_recovered_in_order_without_its_torn_last_line() {
        let root = scratch("recover");
        let killed = {
            let (journal, recovered) = AuditJournal::open(&root).unwrap();
            assert!(recovered.is_empty());
            for id in ["a", "b", "c"] {
                journal.append(record(id), |_, _| ()).unwrap();
            }
            journal.dir.clone()
        };
        let mut file = OpenOptions::new()
            .append(true)
            .open(segment_path(&killed, 0))
            .unwrap();
        file.write_all(b"{\"id\":\"d\",\"recor").unwrap();
        let (journal, recovered) = AuditJournal::open(&root).unwrap();
        assert_eq!(ids(&recovered), ["a", "b", "c"]);
        assert_eq!(recovered[0], record("a"));
        assert_eq!(
            processes(&root).len(),
            2,
            "the new process has a directory of its own"
        );
        journal.forget_recovered().unwrap();
        assert_eq!(processes(&root), std::slice::from_ref(&journal.dir));
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn a_live_process_journal_is_left_alone() {
        let root = scratch("live");
        let (first, _) = AuditJournal::open(&root).unwrap();
        first.append(record("a"), |_, _| ()).unwrap();
        let (second, recovered) = AuditJournal::open(&root).unwrap();
        assert!(recovered.is_empty(), "the first process still runs");
        second.forget_recovered().unwrap();
        assert_eq!(processes(&root).len(), 2);
        // A directory being born (hidden, not yet locked) is not taken over either.
        std::fs::create_dir(root.join(".0-0")).unwrap();
        drop(first);
        let (_third, recovered) = AuditJournal::open(&root).unwrap();
        assert_eq!(ids(&recovered), ["a"]);
        assert!(root.join(".0-0").exists());
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn a_line_holds_the_resource_as_json_and_older_lines_as_a_string_read_too() {
        let mut written = record("a");
        written.resource =
            r#"{"resourceType":"AuditEvent","id":"a","outcomeDesc":"\"quoted\" é"}"#.into();
        let line = journal_line(&written);
        assert!(line.ends_with(b"}\n"));
        let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            parsed["resource"]["id"], "a",
            "the resource is JSON, not a string"
        );
        assert_eq!(
            serde_json::from_slice::<AuditRecord>(&line).unwrap(),
            written
        );
        // A line from before the resource was embedded: every field, the resource escaped.
        let mut older = parsed;
        older["resource"] = serde_json::Value::String(written.resource.clone());
        let older = serde_json::to_vec(&older).unwrap();
        assert_eq!(
            serde_json::from_slice::<AuditRecord>(&older).unwrap(),
            written
        );
    }

    #[test]
    fn a_damaged_line_before_the_end_stops_the_start() {
        let root = scratch("damaged");
        let killed = root.join("1-1");
        std::fs::create_dir_all(&killed).unwrap();
        let good = String::from_utf8(journal_line(&record("a"))).unwrap();
        let good = good.trim_end();
        std::fs::write(
            segment_path(&killed, 4),
            format!("{good}\nnot json\n{good}\n"),
        )
        .unwrap();
        let error = AuditJournal::open(&root).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        // A complete last line that does not parse is damage too, not a torn write.
        std::fs::write(segment_path(&killed, 4), format!("{good}\nnot json\n")).unwrap();
        assert!(AuditJournal::open(&root).is_err());
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn committed_lines_are_deleted_segment_by_segment_and_the_tail_emptied() {
        let root = scratch("committed");
        let (journal, _) = AuditJournal::open(&root).unwrap();
        let files = || segment_numbers(&journal.dir).unwrap();
        let mut positions = Vec::new();
        for n in 0..3 {
            positions.push(journal.append(record(&n.to_string()), |_, p| p).unwrap());
            // A full segment: the next line starts another.
            journal.lock().bytes = SEGMENT_BYTES;
        }
        let last = journal.append(record("3"), |_, p| p).unwrap();
        assert_eq!(
            positions.iter().map(|p| p.segment).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!((last.segment, last.line), (3, 4));
        assert_eq!(files(), [0, 1, 2, 3]);
        journal.committed(positions[1]).unwrap();
        assert_eq!(files(), [1, 2, 3], "only the segments before line 2's go");
        journal.committed(last).unwrap();
        assert_eq!(files(), [3]);
        assert_eq!(
            std::fs::metadata(segment_path(&journal.dir, 3))
                .unwrap()
                .len(),
            0
        );
        // Appending after emptying goes on from the start of the file.
        journal.append(record("4"), |_, _| ()).unwrap();
        drop(journal);
        let (_, recovered) = AuditJournal::open(&root).unwrap();
        assert_eq!(recovered, [record("4")]);
        std::fs::remove_dir_all(&root).ok();
    }
}
