/*
 * The trainer's run folders (seed: comprehensive-dropbox-upload-structure):
 *
 *   models/training/{YYYY-MM-DD}/{SYMBOL}/{model,metrics,features,data,results}/
 *
 * After each upload the flushers tell this module, which
 * - writes model/model_metadata.json beside an uploaded model/model.bin if
 *   none exists (symbol, date, size, content hash, upload time, remote
 *   revision) and uploads it; one written by the trainer is never
 *   touched (huracanfs.model_metadata);
 * - copies candle parquet of a run's data/ folder to
 *   data/candles/{SYMBOL}/ on the remote, as a server-side copy
 *   (huracanfs.shared_candles);
 * - once nothing of a run folder is left to upload, logs one line
 *   comprehensive_dropbox_upload_complete symbol=SOL/USDT date=...
 * results={...} with the per-artefact results, as the seed's trainer did.
 *
 * Called by flusher threads with fs->commit_lock held.
 */
#ifndef HFS_RUNS_H
#define HFS_RUNS_H

#include <stdint.h>

struct hfs;
struct runs;

int runs_create(struct runs **out);
void runs_destroy(struct runs *r);

/* File @ino at remote path @path was uploaded (or found already there). */
void runs_uploaded(struct hfs *fs, uint64_t ino, const char *path);
/* After a batch: reports the run folders that became complete. */
void runs_report(struct hfs *fs);

/* Splits a run-folder path: returns the length of the run folder prefix
 * ("/models/training/D/S") and fills @date and @symbol (as in the path,
 * e.g. "SOL-USDT"), or 0 if @path is not inside a run folder. */
size_t runs_parse(const char *path, char *date, size_t datelen, char *symbol,
		  size_t symlen);

#endif
