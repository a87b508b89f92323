//! Removing what no reader needs any more: versions replaced longer than the retention ago
//! (queries that started on them have finished), and run folders that were never committed
//! (a failed or killed sync). The state store forgets a version before its files go, so a
//! crash in between leaves only an orphan folder, which the next sweep removes.

use std::collections::HashMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use quiver_catalog::{CatalogError, StateStore, Storage, TableName};

use crate::OrchestratorError;

/// Deletes every object under `prefix`.
pub(crate) async fn delete_prefix(
    storage: &Storage,
    prefix: &ObjectPath,
) -> Result<(), CatalogError> {
    let store = storage.store();
    let locations = store
        .list(Some(prefix))
        .map_ok(|meta| meta.location)
        .boxed();
    store
        .delete_stream(locations)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| CatalogError::Storage(format!("deleting {prefix}: {e}")))?;
    Ok(())
}

/// Removes expired versions and orphaned folders; returns how many folders were removed.
pub(crate) async fn collect(
    state: &StateStore,
    storage: &Storage,
    retention: Duration,
    busy: &[TableName],
) -> Result<usize, OrchestratorError> {
    let removed = expire(state, storage, retention).await?;
    let swept = sweep_orphans(state, storage, None, busy, Some(retention)).await?;
    Ok(removed + swept.folders)
}

/// Removes the versions replaced more than `retention` ago (a query in the state store, so
/// cheap enough to run after every sync); returns how many.
pub(crate) async fn expire(
    state: &StateStore,
    storage: &Storage,
    retention: Duration,
) -> Result<usize, OrchestratorError> {
    let mut removed = 0;
    for expired in state.tables().expired_versions(retention)? {
        for url in state
            .tables()
            .forget_version(&expired.table, expired.version)?
        {
            let Some(key) = storage.prefix_of(&url) else {
                continue;
            };
            if url.ends_with('/') {
                delete_prefix(storage, &key).await?;
            } else {
                delete_object(storage, &key).await?;
            }
        }
        removed += 1;
        tracing::info!(table = %expired.table, version = expired.version, "removed a replaced version");
    }
    Ok(removed)
}

async fn delete_object(storage: &Storage, key: &ObjectPath) -> Result<(), CatalogError> {
    match storage.store().delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(CatalogError::Storage(format!("deleting {key}: {e}"))),
    }
}

/// What a sweep of orphaned files did.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// How many folders files were removed from.
    pub folders: usize,
    /// The tables in scope left alone because a sync of theirs was running or started
    /// during the sweep: sweep them again later.
    pub deferred: Vec<TableName>,
}

/// Removes files no version points at (run folders of failed syncs, shard files never
/// committed) of the tables in `scope` (all without), except those of tables being synced
/// here (`busy`) or anywhere (a run `running` in the state, or started since the listing
/// began). With `min_age`, only files older than that (a deleted table's last version may
/// still be read for a while); without, every orphan.
pub(crate) async fn sweep_orphans(
    state: &StateStore,
    storage: &Storage,
    scope: Option<&[TableName]>,
    busy: &[TableName],
    min_age: Option<Duration>,
) -> Result<Swept, OrchestratorError> {
    // The order matters: a run that writes files the listing sees either is in use
    // afterwards, or has finished, and then its version is known (read last).
    let last_run = state.tables().last_run()?;
    // A table a sync is writing now is not even listed: the leader asks again every tick,
    // and a long sync would otherwise cost a listing of the table each time.
    let running = state.tables().tables_in_use(last_run)?;
    let roots = match scope {
        None => vec![storage.tables_root()],
        Some(tables) => tables
            .iter()
            .filter(|t| !running.contains(*t))
            .map(|t| storage.table_prefix(t))
            .collect(),
    };
    let now = chrono::Utc::now();
    let mut files = Vec::new();
    let store = storage.store();
    let mut listing = futures::stream::iter(roots.clone())
        .flat_map(|root| store.list(Some(&root)))
        .boxed();
    while let Some(meta) = listing.next().await {
        files.push(meta.map_err(|e| CatalogError::Storage(format!("listing tables: {e}")))?);
    }
    let in_use = state.tables().tables_in_use(last_run)?;
    let known = state.tables().version_locations()?;
    let busy: Vec<ObjectPath> = busy
        .iter()
        .chain(&in_use)
        .map(|t| storage.table_prefix(t))
        .collect();
    let mut orphans: HashMap<ObjectPath, Vec<ObjectPath>> = HashMap::new();
    for meta in files {
        // tables/<schema>/<table>/<run or shard>/<file>
        let parts: Vec<_> = meta.location.parts().collect();
        if parts.len() < 2 {
            continue;
        }
        let folder = ObjectPath::from_iter(parts[..parts.len() - 1].iter().cloned());
        let young = min_age.is_some_and(|age| {
            now.signed_duration_since(meta.last_modified)
                .to_std()
                .unwrap_or_default()
                < age
        });
        if known.contains(&storage.folder_url(&folder))
            || known.contains(&storage.file_url(&meta.location))
            || busy.iter().any(|b| folder.prefix_matches(b))
            || young
        {
            continue;
        }
        orphans.entry(folder).or_default().push(meta.location);
    }
    // On a local disk, files a stopped process was still writing (`LocalFileSystem` stages
    // each as `<name>#<n>` and leaves such files out of listings): the same rules decide.
    // Walked off the runtime's threads, as `LocalFileSystem` lists.
    let dirs: Vec<_> = roots.iter().filter_map(|r| storage.local_path(r)).collect();
    let found: Vec<_> =
        blocking(move || Ok(dirs.iter().flat_map(|d| staged_files(d)).collect())).await?;
    let mut staged: HashMap<ObjectPath, Vec<std::path::PathBuf>> = HashMap::new();
    for (file, modified) in found {
        let Some(folder) = file
            .parent()
            .and_then(|f| ObjectPath::from_filesystem_path(f).ok())
        else {
            continue;
        };
        let young = min_age.is_some_and(|age| modified.elapsed().unwrap_or_default() < age);
        if known.contains(&storage.folder_url(&folder))
            || busy.iter().any(|b| folder.prefix_matches(b))
            || young
        {
            continue;
        }
        staged.entry(folder).or_default().push(file);
    }
    let deferred = scope
        .unwrap_or_default()
        .iter()
        .filter(|t| running.contains(*t) || in_use.contains(*t))
        .cloned()
        .collect();
    let mut removed = 0;
    for (folder, files) in staged {
        tracing::info!(folder = %folder, files = files.len(), "removing half-written files");
        // A folder with nothing listed in it is gone once they are.
        let dir = (!orphans.contains_key(&folder))
            .then(|| storage.local_path(&folder))
            .flatten();
        removed += usize::from(dir.is_some());
        blocking(move || {
            for file in &files {
                std::fs::remove_file(file).map_err(|e| {
                    CatalogError::Storage(format!("deleting {}: {e}", file.display()))
                })?;
            }
            if let Some(dir) = dir {
                let _ = std::fs::remove_dir(dir);
            }
            Ok(())
        })
        .await?;
    }
    for (folder, files) in orphans {
        let doomed = futures::stream::iter(files.into_iter().map(Ok)).boxed();
        storage
            .store()
            .delete_stream(doomed)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| CatalogError::Storage(format!("deleting in {folder}: {e}")))?;
        tracing::info!(folder = %folder, "removed unpublished files");
        removed += 1;
    }
    Ok(Swept {
        folders: removed,
        deferred,
    })
}

/// Runs file-system work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, CatalogError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CatalogError::Internal(e.to_string()))?
}

/// The files under `dir` that `LocalFileSystem` is (or was) still writing, with when they
/// were last written: named `<name>#<n>`, as it names a file until it is renamed into place.
fn staged_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(path);
            } else if entry.file_name().to_string_lossy().contains('#') {
                found.push((path, meta.modified().unwrap_or(std::time::UNIX_EPOCH)));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::PutPayload;
    use quiver_catalog::NewVersion;

    async fn write(storage: &Storage, folder: &ObjectPath) {
        storage
            .store()
            .put(
                &folder.clone().join("part-0.parquet"),
                PutPayload::from("x"),
            )
            .await
            .unwrap();
    }

    fn exists(dir: &std::path::Path, folder: &ObjectPath) -> bool {
        dir.join(folder.parts().next_back().unwrap().as_ref())
            .exists()
    }

    /// The leader sweeps a dead replica's folders while another sync of the table may be
    /// writing its own: those are left until no run of the table is in progress.
    #[tokio::test]
    async fn a_sweep_leaves_tables_a_sync_is_writing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let state = StateStore::in_memory().unwrap();
        let t: TableName = "s.t".parse().unwrap();
        let table_dir = dir.path().join("tables/s/t");

        let published = storage.new_run_prefix(&t);
        write(&storage, &published).await;
        let location = storage.folder_url(&published);
        state
            .tables()
            .commit_version(
                &t,
                &NewVersion {
                    location,
                    rows: 1,
                    bytes: 1,
                    ..NewVersion::default()
                },
            )
            .unwrap();
        let killed = storage.new_run_prefix(&t);
        write(&storage, &killed).await;
        let run = state.tables().start_run(&t, "retry", None, "r2").unwrap();
        let writing = storage.new_run_prefix(&t);
        write(&storage, &writing).await;

        let scope = [t.clone()];
        let swept = sweep_orphans(&state, &storage, Some(&scope[..]), &[], None)
            .await
            .unwrap();
        assert_eq!((swept.folders, swept.deferred), (0, vec![t.clone()]));
        assert!(exists(&table_dir, &killed) && exists(&table_dir, &writing));

        state.tables().fail_run(run, "boom").unwrap();
        let swept = sweep_orphans(&state, &storage, Some(&scope[..]), &[], None)
            .await
            .unwrap();
        assert_eq!((swept.folders, swept.deferred), (2, vec![]));
        assert!(exists(&table_dir, &published));
        assert!(!exists(&table_dir, &killed) && !exists(&table_dir, &writing));
    }

    /// A sync killed while writing a file leaves it staged (`part-….parquet#1`), which
    /// listings do not show: the sweep removes it, and its folder, all the same.
    #[tokio::test]
    async fn a_sweep_removes_files_a_killed_sync_was_writing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let state = StateStore::in_memory().unwrap();
        let t: TableName = "s.t".parse().unwrap();
        let table_dir = dir.path().join("tables/s/t");
        let stage = |folder: &ObjectPath| {
            let path = storage.local_path(folder).unwrap();
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("part-00001.parquet#1"), b"half").unwrap();
        };
        let only_staged = storage.new_run_prefix(&t);
        stage(&only_staged);
        let both = storage.new_run_prefix(&t);
        write(&storage, &both).await;
        stage(&both);
        // A file being written right now is young: a sweep with a minimum age keeps it.
        let swept = sweep_orphans(&state, &storage, None, &[], Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(swept.folders, 0);
        assert!(exists(&table_dir, &only_staged) && exists(&table_dir, &both));

        let swept = sweep_orphans(&state, &storage, None, &[], None)
            .await
            .unwrap();
        assert_eq!(swept.folders, 2);
        assert!(!exists(&table_dir, &only_staged) && !exists(&table_dir, &both));
    }
}
