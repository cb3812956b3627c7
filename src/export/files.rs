//! A job's NDJSON files on disk: appended a page at a time, a new file begun when one passes the
//! size limit, and on resume each cut back to its committed length, so a page written before a
//! crash but not committed is written again exactly once.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::fs::OpenOptions;
use tokio::io::AsyncWriteExt;

use crate::state::exports::ExportFile;

/// The files of one job, as far as this writer has written them.
pub struct NdjsonFiles {
    dir: PathBuf,
    max_bytes: i64,
    files: Vec<ExportFile>,
    /// The files being appended to, by name: the types a job exports at once take turns, and
    /// each keeps its file open rather than opening it again for every page.
    open: HashMap<String, Arc<std::fs::File>>,
}

/// A file name this writer makes: `<Type>-<n>.ndjson`. Downloads accept nothing else.
pub fn is_file_name(name: &str) -> bool {
    name.strip_suffix(".ndjson")
        .and_then(|stem| stem.rsplit_once('-'))
        .is_some_and(|(resource_type, n)| {
            !resource_type.is_empty()
                && resource_type.chars().all(|c| c.is_ascii_alphabetic())
                && !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit())
        })
}

impl NdjsonFiles {
    /// The files of a job at `dir`, cut back to what the state store says is committed (files it
    /// does not know are emptied when they are next written).
    pub async fn resume(
        dir: &Path,
        max_bytes: i64,
        committed: Vec<ExportFile>,
    ) -> std::io::Result<NdjsonFiles> {
        tokio::fs::create_dir_all(dir).await?;
        for file in &committed {
            let path = dir.join(&file.name);
            let handle = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .await?;
            handle.set_len(file.bytes as u64).await?;
        }
        Ok(NdjsonFiles {
            dir: dir.to_owned(),
            max_bytes: max_bytes.max(1),
            files: committed,
            open: HashMap::new(),
        })
    }

    /// Appends `count` complete NDJSON lines of `resource_type`, given as consecutive chunks: to
    /// its latest file while that is under the size limit, else to a new one. Returns the file's
    /// state after it, to commit. The chunks are written as they are, from a blocking thread, and
    /// dropped there: a page is megabytes that no async thread should copy or free.
    pub async fn append(
        &mut self,
        resource_type: &str,
        chunks: Vec<Vec<u8>>,
        count: i64,
    ) -> std::io::Result<ExportFile> {
        let latest = self
            .files
            .iter()
            .rposition(|f| f.resource_type == resource_type && f.bytes < self.max_bytes);
        let index = match latest {
            Some(index) => index,
            None => {
                // The type's earlier files are full: never written again in this run.
                let full: Vec<&String> = self
                    .files
                    .iter()
                    .filter(|f| f.resource_type == resource_type)
                    .map(|f| &f.name)
                    .collect();
                self.open.retain(|name, _| !full.contains(&name));
                let number = full.len() + 1;
                self.files.push(ExportFile {
                    name: format!("{resource_type}-{number}.ndjson"),
                    resource_type: resource_type.to_owned(),
                    position: self.files.len() as i64,
                    lines: 0,
                    bytes: 0,
                });
                self.files.len() - 1
            }
        };
        let file = &mut self.files[index];
        let handle = match self.open.get(&file.name) {
            Some(handle) => Arc::clone(handle),
            None => {
                let handle = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(self.dir.join(&file.name))
                    .await?;
                // A file not yet committed may hold a page from before a crash: start it over.
                handle.set_len(file.bytes as u64).await?;
                let handle = Arc::new(handle.into_std().await);
                self.open.insert(file.name.clone(), Arc::clone(&handle));
                handle
            }
        };
        let bytes: usize = chunks.iter().map(Vec::len).sum();
        // Written to the operating system before the commit, so a killed process loses nothing
        // the state store says is written.
        tokio::task::spawn_blocking(move || {
            chunks
                .iter()
                .try_for_each(|chunk| (&*handle).write_all(chunk))
        })
        .await
        .map_err(std::io::Error::other)??;
        file.lines += count;
        file.bytes += bytes as i64;
        Ok(file.clone())
    }

    /// Notes the patients whose data `file` now holds, for the audit trail of its downloads:
    /// appended to `<file>.patients`, one id per line (repeats are dropped when read). A page
    /// written again after a crash notes its patients again, which errs on the side of recording.
    pub async fn note_patients(
        &self,
        file: &str,
        patients: &BTreeSet<String>,
    ) -> std::io::Result<()> {
        if patients.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for id in patients {
            text.push_str(id);
            text.push('\n');
        }
        let mut handle = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{file}.patients")))
            .await?;
        handle.write_all(text.as_bytes()).await?;
        handle.flush().await
    }

    /// The lines of `resource_type` written so far, one NDJSON line at a time, read back.
    pub async fn written_lines(&self, resource_type: &str) -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        for file in self
            .files
            .iter()
            .filter(|f| f.resource_type == resource_type)
        {
            let text = tokio::fs::read_to_string(self.dir.join(&file.name)).await?;
            let committed = text.get(..file.bytes as usize).unwrap_or(&text);
            lines.extend(committed.lines().map(str::to_owned));
        }
        Ok(lines)
    }
}

/// The patients whose data the file `name` in `dir` holds (see `NdjsonFiles::note_patients`).
pub async fn patients_in(dir: &Path, name: &str) -> std::io::Result<BTreeSet<String>> {
    match tokio::fs::read_to_string(dir.join(format!("{name}.patients"))).await {
        Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_names_the_writer_makes_are_files() {
        assert!(is_file_name("Patient-1.ndjson"));
        assert!(is_file_name("OperationOutcome-12.ndjson"));
        for name in [
            "../Patient-1.ndjson",
            "Patient-1.ndjson.gz",
            "Patient.ndjson",
            "Patient-.ndjson",
            "-1.ndjson",
            "Pa/tient-1.ndjson",
        ] {
            assert!(!is_file_name(name), "{name}");
        }
    }

    #[tokio::test]
    async fn pages_split_at_the_limit_and_a_resume_drops_what_was_not_committed() {
        let dir = std::env::temp_dir().join(format!("portico-ndjson-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let mut files = NdjsonFiles::resume(&dir, 10, Vec::new()).await.unwrap();
        let first = files
            .append("Patient", vec![b"{\"a\":1}\n".to_vec()], 1)
            .await
            .unwrap();
        assert_eq!(
            (first.name.as_str(), first.lines, first.bytes),
            ("Patient-1.ndjson", 1, 8)
        );
        // Under the limit: the same file.
        let second = files
            .append("Patient", vec![b"{\"b\":2}\n".to_vec()], 1)
            .await
            .unwrap();
        assert_eq!(
            (second.name.as_str(), second.bytes),
            ("Patient-1.ndjson", 16)
        );
        // Past it: a new file.
        let third = files
            .append("Patient", vec![b"{\"c\":3}\n".to_vec()], 1)
            .await
            .unwrap();
        assert_eq!((third.name.as_str(), third.bytes), ("Patient-2.ndjson", 8));
        let error = files
            .append("OperationOutcome", vec![b"{}\n".to_vec()], 1)
            .await
            .unwrap();
        assert_eq!(error.position, 2);

        // Committed: the first file whole, the second after one line; a third page of the second
        // file, and the error file, were written but never committed.
        let committed = vec![second.clone(), third.clone()];
        files
            .append("Patient", vec![b"{\"d\":".to_vec(), b"4}\n".to_vec()], 1)
            .await
            .unwrap();
        drop(files);
        let mut resumed = NdjsonFiles::resume(&dir, 10, committed).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("Patient-2.ndjson")).unwrap(),
            "{\"c\":3}\n"
        );
        let again = resumed
            .append("OperationOutcome", vec![b"{\"x\":1}\n".to_vec()], 1)
            .await
            .unwrap();
        assert_eq!(
            (again.name.as_str(), again.lines),
            ("OperationOutcome-1.ndjson", 1)
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("OperationOutcome-1.ndjson")).unwrap(),
            "{\"x\":1}\n",
            "the uncommitted error line is gone"
        );
        assert_eq!(
            resumed.written_lines("Patient").await.unwrap(),
            vec!["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]
        );
        let noted: BTreeSet<String> = ["7".to_owned(), "3".to_owned()].into();
        resumed
            .note_patients("Patient-2.ndjson", &noted)
            .await
            .unwrap();
        resumed
            .note_patients("Patient-2.ndjson", &["3".to_owned()].into())
            .await
            .unwrap();
        assert_eq!(patients_in(&dir, "Patient-2.ndjson").await.unwrap(), noted);
        assert!(
            patients_in(&dir, "Patient-1.ndjson")
                .await
                .unwrap()
                .is_empty()
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
