//! SQLite's `portico_fold(text)`: `dialect::fold` as a deterministic SQL function, registered on
//! every connection of a reading SQLite pool. sqlx 0.8 has no safe API for application-defined
//! functions, so this is the one place Portico calls SQLite's C API itself.

use std::ffi::{CString, c_char, c_int};
use std::panic::catch_unwind;

use libsqlite3_sys as ffi;
use sqlx::sqlite::SqliteConnection;

use crate::dialect::fold::{SQL_FUNCTION, fold};

/// Registers `portico_fold` on `conn` (for the connection's lifetime).
pub(super) async fn register(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let name = CString::new(SQL_FUNCTION).expect("the function name has no NUL");
    // SAFETY: the handle is an open connection that the lock keeps to us for this call; SQLite
    // copies the name; the function has no user data, so nothing needs a destructor.
    let code = unsafe {
        ffi::sqlite3_create_function_v2(
            handle.as_raw_handle().as_ptr(),
            name.as_ptr(),
            1,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC | ffi::SQLITE_INNOCUOUS,
            std::ptr::null_mut(),
            Some(fold_function),
            None,
            None,
            None,
        )
    };
    if code == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!("cannot register {SQL_FUNCTION} on a SQLite connection (SQLite error {code})")
                .into(),
        ))
    }
}

/// The C entry point: NULL stays NULL, anything else is read as UTF-8 text and folded.
unsafe extern "C" fn fold_function(
    context: *mut ffi::sqlite3_context,
    argument_count: c_int,
    arguments: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: SQLite passes `argument_count` (1, as registered) values that live for this call,
    // and text pointers that stay valid until the value is next converted; the result text is
    // copied by SQLite (SQLITE_TRANSIENT) before `folded` is dropped.
    unsafe {
        if argument_count != 1 {
            ffi::sqlite3_result_error_code(context, ffi::SQLITE_MISUSE);
            return;
        }
        let value = *arguments;
        if ffi::sqlite3_value_type(value) == ffi::SQLITE_NULL {
            ffi::sqlite3_result_null(context);
            return;
        }
        let text = ffi::sqlite3_value_text(value);
        let length = usize::try_from(ffi::sqlite3_value_bytes(value)).unwrap_or(0);
        let bytes: &[u8] = if text.is_null() || length == 0 {
            if text.is_null() && length > 0 {
                ffi::sqlite3_result_error_nomem(context);
                return;
            }
            &[]
        } else {
            std::slice::from_raw_parts(text, length)
        };
        // A panic must not unwind into SQLite's C frames.
        let Ok(folded) = catch_unwind(|| fold(&String::from_utf8_lossy(bytes))) else {
            ffi::sqlite3_result_error_code(context, ffi::SQLITE_INTERNAL);
            return;
        };
        ffi::sqlite3_result_text64(
            context,
            folded.as_ptr().cast::<c_char>(),
            folded.len() as ffi::sqlite3_uint64,
            ffi::SQLITE_TRANSIENT(),
            ffi::SQLITE_UTF8 as u8,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::db::{Database, DbSettings};
    use crate::dialect::RenderedQuery;
    use crate::dialect::ast::Value;
    use crate::dialect::fold::fold;

    #[tokio::test]
    async fn every_reading_sqlite_connection_folds_like_rust() {
        let database = Database::connect_lazy(&DbSettings {
            url: "sqlite::memory:".into(),
            max_connections: 2,
            statement_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
        })
        .unwrap();
        let samples = [
            "Müller",
            "RENE\u{301}E",
            "Ærø",
            "\u{fb01}sh",
            "Smith",
            "",
            "İstanbul",
        ];
        for sample in samples {
            let rows = database
                .fetch(&RenderedQuery {
                    sql: "SELECT portico_fold(?1), portico_fold(NULL), portico_fold(42)".into(),
                    params: vec![Value::Text(sample.into())],
                })
                .await
                .unwrap_or_else(|e| panic!("{}", e.message));
            assert_eq!(
                rows,
                vec![vec![
                    Value::Text(fold(sample)),
                    Value::Null,
                    Value::Text("42".into())
                ]],
                "{sample}"
            );
        }
        database.close().await;
    }
}
