//! The narrow interface between the store and its database, and its SQLite implementation.
//!
//! Everything the gateway must not forget goes through [`Persistence`]: records, tombstones and
//! the revision counter. Each method is one transaction, so a crash leaves either the old state or
//! the new one.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use sandgate_core::{RemovalPath, SandboxId, SandboxRecord, Tombstone};

use crate::error::StoreError;

/// Everything loaded at startup.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Live and DELETING records.
    pub records: Vec<SandboxRecord>,
    /// Tombstones still retained.
    pub tombstones: Vec<Tombstone>,
    /// The last revision written.
    pub revision: u64,
}

/// The durable side of the store.
///
/// Several gateway replicas could later share one database behind this interface. For that, a
/// replica must learn of removals from its own observation of the backend, never from another
/// replica's memory, and only one replica at a time may run the reconciler.
pub trait Persistence: Send {
    /// Reads every record and tombstone.
    ///
    /// # Errors
    /// Returns an error if the database cannot be read or a row cannot be decoded.
    fn load(&mut self) -> Result<Loaded, StoreError>;

    /// Inserts a new record at `revision`.
    ///
    /// # Errors
    /// Returns an error if the write fails; nothing is written then.
    fn insert(&mut self, record: &SandboxRecord) -> Result<(), StoreError>;

    /// Replaces a record; its `revision` field is the new revision.
    ///
    /// # Errors
    /// Returns an error if the write fails; nothing is written then.
    fn update(&mut self, record: &SandboxRecord) -> Result<(), StoreError>;

    /// Deletes a record and keeps its tombstone, in one transaction.
    ///
    /// # Errors
    /// Returns an error if the write fails; nothing is written then.
    fn remove(&mut self, tombstone: &Tombstone, revision: u64) -> Result<(), StoreError>;

    /// Deletes tombstones of removals confirmed before `before`, returning how many.
    ///
    /// # Errors
    /// Returns an error if the write fails.
    fn purge_tombstones(&mut self, before: SystemTime) -> Result<usize, StoreError>;
}

/// Schema migrations, in order; `PRAGMA user_version` counts how many were applied.
const MIGRATIONS: &[&str] = &[
    // Version 1: records, tombstones and the revision counter.
    "CREATE TABLE sandboxes (
         id        TEXT PRIMARY KEY,
         workspace TEXT NOT NULL,
         name      TEXT NOT NULL,
         phase     TEXT NOT NULL,
         revision  INTEGER NOT NULL,
         record    TEXT NOT NULL
     );
     CREATE UNIQUE INDEX sandboxes_by_name ON sandboxes (workspace, name);
     CREATE TABLE tombstones (
         id                    TEXT PRIMARY KEY,
         workspace             TEXT NOT NULL,
         name                  TEXT NOT NULL,
         deletion_requested_ms INTEGER NOT NULL,
         deleted_ms            INTEGER NOT NULL,
         path                  TEXT NOT NULL,
         revision              INTEGER NOT NULL
     );
     CREATE INDEX tombstones_by_age ON tombstones (deleted_ms);
     CREATE TABLE revision (value INTEGER NOT NULL);
     INSERT INTO revision (value) VALUES (0);",
];

/// [`Persistence`] in one SQLite file, in WAL mode with full synchronous commits, so a committed
/// change survives a crash of the process and of the machine.
pub struct Sqlite {
    connection: Connection,
    path: PathBuf,
}

impl Sqlite {
    /// Opens or creates the database at `path` and applies pending migrations.
    ///
    /// # Errors
    /// Returns an error if the file cannot be opened, or was written by a newer schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(Duration::from_secs(5))?;

        let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found: version,
                supported,
            });
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let transaction = connection.transaction()?;
            transaction.execute_batch(migration)?;
            transaction.pragma_update(None, "user_version", index as i64 + 1)?;
            transaction.commit()?;
            tracing::info!(version = index + 1, "Applied store migration");
        }

        Ok(Self {
            connection,
            path: path.to_path_buf(),
        })
    }

    /// Limits the database file to `pages` pages, so that tests can make writes fail as on a full
    /// disk.
    ///
    /// # Errors
    /// Returns an error if the pragma fails.
    pub fn set_max_page_count(&mut self, pages: u64) -> Result<(), StoreError> {
        self.connection
            .pragma_update(None, "max_page_count", pages)?;
        Ok(())
    }

    /// Turns off fsync, for tests where durability is not under test.
    #[cfg(test)]
    pub(crate) fn disable_fsync(&mut self) -> Result<(), StoreError> {
        self.connection.pragma_update(None, "synchronous", "OFF")?;
        Ok(())
    }

    /// Returns the database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn to_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64)
}

fn path_name(path: RemovalPath) -> &'static str {
    path.as_str()
}

fn parse_path(id: &str, text: &str) -> Result<RemovalPath, StoreError> {
    match text {
        "request" => Ok(RemovalPath::Request),
        "reconciler" => Ok(RemovalPath::Reconciler),
        "force" => Ok(RemovalPath::Force),
        other => Err(StoreError::Corrupt {
            id: id.to_string(),
            detail: format!("unknown removal path {other:?}"),
        }),
    }
}

fn encode(record: &SandboxRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|error| StoreError::Corrupt {
        id: record.id.to_string(),
        detail: error.to_string(),
    })
}

fn bump_revision(connection: &Connection, revision: u64) -> Result<(), StoreError> {
    connection.execute("UPDATE revision SET value = ?1", params![revision as i64])?;
    Ok(())
}

impl Persistence for Sqlite {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        let revision: i64 = self
            .connection
            .query_row("SELECT value FROM revision", [], |row| row.get(0))
            .optional()?
            .unwrap_or(0);

        let mut records = Vec::new();
        let mut statement = self
            .connection
            .prepare("SELECT id, record FROM sandboxes ORDER BY workspace, name")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (id, json) = row?;
            let record: SandboxRecord =
                serde_json::from_str(&json).map_err(|error| StoreError::Corrupt {
                    id: id.clone(),
                    detail: error.to_string(),
                })?;
            records.push(record);
        }

        let mut tombstones = Vec::new();
        let mut statement = self.connection.prepare(
            "SELECT id, workspace, name, deletion_requested_ms, deleted_ms, path FROM tombstones",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, String>(5)?,
            ))
        })?;
        for row in rows {
            let (id, workspace, name, requested, deleted, path) = row?;
            let sandbox_id: SandboxId = id.parse().map_err(|_| StoreError::Corrupt {
                id: id.clone(),
                detail: "tombstone id is not a UUID".to_string(),
            })?;
            tombstones.push(Tombstone {
                id: sandbox_id,
                workspace,
                name,
                deletion_requested_at: from_millis(requested),
                deleted_at: from_millis(deleted),
                path: parse_path(&id, &path)?,
            });
        }

        Ok(Loaded {
            records,
            tombstones,
            revision: revision.max(0) as u64,
        })
    }

    fn insert(&mut self, record: &SandboxRecord) -> Result<(), StoreError> {
        let json = encode(record)?;
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "INSERT INTO sandboxes (id, workspace, name, phase, revision, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                record.id.to_string(),
                record.workspace,
                record.name,
                record.phase.as_str(),
                record.revision as i64,
                json
            ],
        )?;
        bump_revision(&transaction, record.revision)?;
        transaction.commit()?;
        Ok(())
    }

    fn update(&mut self, record: &SandboxRecord) -> Result<(), StoreError> {
        let json = encode(record)?;
        let transaction = self.connection.transaction()?;
        let changed = transaction.execute(
            "UPDATE sandboxes SET phase = ?2, revision = ?3, record = ?4 WHERE id = ?1",
            params![
                record.id.to_string(),
                record.phase.as_str(),
                record.revision as i64,
                json
            ],
        )?;
        if changed != 1 {
            return Err(StoreError::Corrupt {
                id: record.id.to_string(),
                detail: "the record to update is missing from the database".to_string(),
            });
        }
        bump_revision(&transaction, record.revision)?;
        transaction.commit()?;
        Ok(())
    }

    fn remove(&mut self, tombstone: &Tombstone, revision: u64) -> Result<(), StoreError> {
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "DELETE FROM sandboxes WHERE id = ?1",
            params![tombstone.id.to_string()],
        )?;
        transaction.execute(
            "INSERT OR REPLACE INTO tombstones
                 (id, workspace, name, deletion_requested_ms, deleted_ms, path, revision)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                tombstone.id.to_string(),
                tombstone.workspace,
                tombstone.name,
                to_millis(tombstone.deletion_requested_at),
                to_millis(tombstone.deleted_at),
                path_name(tombstone.path),
                revision as i64
            ],
        )?;
        bump_revision(&transaction, revision)?;
        transaction.commit()?;
        Ok(())
    }

    fn purge_tombstones(&mut self, before: SystemTime) -> Result<usize, StoreError> {
        let purged = self.connection.execute(
            "DELETE FROM tombstones WHERE deleted_ms < ?1",
            params![to_millis(before)],
        )?;
        Ok(purged)
    }
}
