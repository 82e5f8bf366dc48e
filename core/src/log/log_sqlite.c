/*
 * The embedded backend: the whole log in one SQLite file (WAL).
 *
 * es_events is append-only and keyed by its position alone, so an append
 * touches the right edge of one B-tree. There is no (stream, version) index:
 * the per-stream check lives in the small es_heads table (current version,
 * the position of the stream's newest event, and the latest snapshot), and
 * every event row links to the previous event of its stream. es_streams maps
 * (type, aggregate id) to the stream id and is written once per stream, so
 * the rows rewritten by every batch stay narrow. SQLite allows one writer at a
 * time, so "read head, check version, append, move head" inside one
 * BEGIN IMMEDIATE transaction is the optimistic concurrency check: two
 * writers can never both append version n. Reading a stream walks the links
 * back from the head; loading an aggregate mostly reads its snapshot.
 *
 * Inside a write transaction, stream heads and snapshots live in a cache
 * (stream_entry) and leave it once, at commit, however many commands of the
 * batch touched them: into the deferred heads (tail_heads), which reach
 * es_heads every few thousand events, the log's tail saying what they hold in
 * between; appended events wait until commit or until something reads
 * es_events. Both go in multi-row statements, in rowid order:
 * one statement per row cost about as much as the row. The cache is trusted only while
 * PRAGMA data_version shows no other connection committed since our last
 * transaction, and is dropped on rollback.
 *
 * The file <db>-head keeps the log's end where a damaged WAL cannot take it
 * (see head_page), and an open that finds the log ending below it fails. A
 * log opened read-only (ES_LOG_READONLY, for inspection) writes and creates
 * nothing, and a lookup there that finds nothing asks the table again without
 * its index, so a damaged index is reported as damage, not as "no events".
 */
#include "log/log.h"
#include "dbfile.h"
#include "idindex.h"
#include "lru.h"
#include "readpipe.h"
#include "sql.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCHEMA_VERSION 6
/* The oldest schema a read-only open reads: version 3 added only what writers read (command
 * fingerprints), and inspection must not need a writer to have upgraded the file first. */
#define READ_SCHEMA_MIN 2

enum {
    S_TYPE_GET,
    S_TYPE_NAME,
    S_TYPE_PUT,
    S_STREAM_GET,
    S_STREAM_END,
    S_EVENT_LINK,
    S_EVENT_GET,
    S_LOG_READ,
    S_END,
    S_SNAP_GET,
    S_CMD_GET,
    S_CMD_PUT,
    S_CMD_SINCE,
    S_CMD_EDGE,
    S_CMD_PRUNE,
    S_DATA_VERSION,
    S_FETCH,
    S_STREAM_KEY,
    S_TOPIC_COUNT,
    S_OTHER_TYPES,
    S_TOPIC_SAMPLE,
    S_DLQ_PUT,
    S_HEADS_FROM,
    S_HEADS_FROM_CLEAR,
    S_TAIL,
    S_META_GET,
    S_META_PUT,
    S_COUNT
};

static const char *const sql_text[S_COUNT] = {
    [S_TYPE_GET] = "SELECT id FROM es_types WHERE name = ?1",
    [S_TYPE_NAME] = "SELECT name FROM es_types WHERE id = ?1",
    [S_TYPE_PUT] = "INSERT INTO es_types(name) VALUES (?1)",
    /* A stream without a head row yet (created in this transaction) is at version 0. */
    [S_STREAM_GET] =
        "SELECT s.id, COALESCE(h.version, 0), COALESCE(h.head, 0) FROM es_streams s "
        "LEFT JOIN es_heads h ON h.stream = s.id WHERE s.type_id = ?1 AND s.agg_id = ?2",
    [S_STREAM_END] = "SELECT COALESCE(MAX(id), 0) + 1 FROM es_streams",
    [S_EVENT_LINK] = "SELECT version, prev FROM es_events WHERE pos = ?1",
    [S_EVENT_GET] = "SELECT envelope FROM es_events WHERE pos = ?1",
    [S_LOG_READ] = "SELECT pos, type_id, envelope FROM es_events WHERE pos >= ?1 ORDER BY pos",
    [S_END] = "SELECT COALESCE(MAX(pos), 0) + 1 FROM es_events",
    [S_SNAP_GET] = "SELECT h.snap_version, t.name, h.snap_state, h.snap_at FROM es_heads h "
                   "JOIN es_types t ON t.id = h.snap_type WHERE h.stream = ?1",
    [S_CMD_GET] = "SELECT c.outcome, c.first_version, c.last_version, c.version, c.reason, t.name, "
                  "c.agg_id, c.fingerprint, c.id, c.at FROM es_commands c JOIN es_types t "
                  "ON t.id = c.type_id WHERE c.seq = ?1",
    [S_CMD_PUT] = "INSERT INTO es_commands(id, type_id, agg_id, outcome, first_version, "
                  "last_version, version, reason, fingerprint, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
                  "?7, ?8, ?9, ?10)",
    /* The id window's index catching up, and the left edge it is pruned from. */
    [S_CMD_SINCE] = "SELECT seq, id FROM es_commands WHERE seq > ?1 ORDER BY seq",
    [S_CMD_EDGE] = "SELECT seq, at FROM es_commands WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
    [S_CMD_PRUNE] = "DELETE FROM es_commands WHERE seq < ?1",
    [S_DATA_VERSION] = "PRAGMA data_version",
    /* No join for the key: lg_record_key reads it for the few records that need it. */
    [S_FETCH] = "SELECT pos, type_id, stream, envelope FROM es_events WHERE pos >= ?1 ORDER BY pos",
    [S_STREAM_KEY] = "SELECT agg_id FROM es_streams WHERE id = ?1",
    [S_TOPIC_COUNT] = "SELECT count(*) FROM es_events WHERE pos >= ?1 AND type_id = ?2",
    /* Two seeks in es_streams' (type_id, agg_id) index: does another type have events? */
    [S_OTHER_TYPES] = "SELECT EXISTS (SELECT 1 FROM es_streams WHERE type_id < ?1) OR "
                      "EXISTS (SELECT 1 FROM es_streams WHERE type_id > ?1)",
    /* Of ?3 positions spread evenly over [?1, ?1 + ?2), how many hold an event of type ?4:
     * one rowid seek each. */
    [S_TOPIC_SAMPLE] = "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE "
                       "i + 1 < ?3) SELECT count(*) FROM k JOIN es_events e ON e.pos = ?1 + "
                       "(?2 * (2 * k.i + 1)) / (2 * ?3) WHERE e.type_id = ?4",
    [S_DLQ_PUT] = "INSERT OR IGNORE INTO es_dlq_records(topic, ref, key, value, headers, at) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    /* Deferred heads (tail_heads): es_heads holds every event below heads_from. */
    [S_HEADS_FROM] = "SELECT CAST(value AS INTEGER) FROM es_meta WHERE key = 'heads_from'",
    [S_HEADS_FROM_CLEAR] = "DELETE FROM es_meta WHERE key = 'heads_from'",
    [S_TAIL] = "SELECT pos, stream, version FROM es_events WHERE pos >= ?1 ORDER BY pos",
    [S_META_GET] = "SELECT value FROM es_meta WHERE key = ?1",
    [S_META_PUT] = "INSERT OR REPLACE INTO es_meta(key, value) VALUES (?1, ?2)",
};

/* The head row of a stream, rewritten by every batch that touches the stream: kept narrow
 * (the snapshot's state type is an es_types id), since a batch over many streams dirties
 * every page of this table and each dirty page is written twice (WAL, then checkpoint). */
#define HEADS_SQL                                                                                  \
    "CREATE TABLE es_heads(stream INTEGER PRIMARY KEY, version INTEGER NOT NULL,"                  \
    " head INTEGER NOT NULL, snap_version INTEGER, snap_type INTEGER, snap_state BLOB,"            \
    " snap_at INTEGER);"
/* While heads are deferred (es_meta heads_from set) nothing may write es_heads: the rows a
 * writer of schema version 5 or older would write there (it had the file open before the
 * upgrade, so never read the version) rest on an es_heads that misses the log's tail, and its
 * appends on the versions it read there. Its transaction fails instead of forking a stream. A
 * flush clears heads_from before it writes. */
#define HEADS_GUARD_MSG                                                                            \
    "'es_heads cannot be written while heads are deferred (schema version 6): a process of an "    \
    "older eskit has this file open; stop it, and open the file only with an eskit that reads "    \
    "schema version 6'"
#define HEADS_GUARD_WHEN " ON es_heads WHEN EXISTS (SELECT 1 FROM es_meta WHERE key = 'heads_from')"
#define HEADS_GUARD_SQL                                                                            \
    "CREATE TRIGGER IF NOT EXISTS es_heads_guard_insert BEFORE INSERT" HEADS_GUARD_WHEN            \
    " BEGIN SELECT RAISE(ABORT, " HEADS_GUARD_MSG "); END;"                                        \
    "CREATE TRIGGER IF NOT EXISTS es_heads_guard_update BEFORE UPDATE" HEADS_GUARD_WHEN            \
    " BEGIN SELECT RAISE(ABORT, " HEADS_GUARD_MSG "); END;"
#define SNAPSHOTS_VIEW_SQL                                                                         \
    "CREATE VIEW es_snapshots(stream, version, state_type, state, taken_at) AS"                    \
    " SELECT h.stream, h.snap_version, t.name, h.snap_state, h.snap_at FROM es_heads h"            \
    " JOIN es_types t ON t.id = h.snap_type;"

/* <topic>.dlq records: poison a consumer parked, for tools that read dead letters. */
#define DLQ_RECORDS_SQL                                                                            \
    "CREATE TABLE es_dlq_records(seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,"                    \
    " ref TEXT NOT NULL UNIQUE, key TEXT, value BLOB, headers TEXT NOT NULL, at INTEGER NOT "      \
    "NULL);"

/* The schema catalogue (log/catalogue_sqlite.c, docs/schemas.md): one row per recorded version
 * of a message type, its canonical eskit.v1.Schema bytes and their fingerprint. */
#define SCHEMAS_SQL                                                                                \
    "CREATE TABLE es_schemas(name TEXT NOT NULL, version INTEGER NOT NULL,"                        \
    " fingerprint TEXT NOT NULL, schema BLOB NOT NULL, registered_at INTEGER NOT NULL,"            \
    " registered_by TEXT NOT NULL, PRIMARY KEY(name, version), UNIQUE(name, fingerprint))"         \
    " WITHOUT ROWID;"

/* An es_commands row remembers a command id with its result and what the command asked
 * (fingerprint: ES_FINGERPRINT_LEN bytes; NULL in rows written before schema version 3), and
 * when it first ran (at, ms since the epoch). Rows are in insertion order (seq) with no index on
 * the id: an insert lands on the right edge whatever the ids look like, pruning the window takes
 * rows from the left edge, and the ids are found through an index in memory (idindex.h). */
#define COMMANDS_SQL(name)                                                                         \
    "CREATE TABLE " name "(seq INTEGER PRIMARY KEY, id TEXT NOT NULL, type_id INTEGER NOT NULL,"   \
    " agg_id TEXT NOT NULL, outcome INTEGER NOT NULL, first_version INTEGER NOT NULL,"             \
    " last_version INTEGER NOT NULL, version INTEGER NOT NULL, reason TEXT, fingerprint BLOB,"     \
    " at INTEGER NOT NULL);"

/* es_types interns type names: aggregate types, and the state types of snapshots. */
static const char schema_sql[] =
    "CREATE TABLE es_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE es_types(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
    "CREATE TABLE es_streams(id INTEGER PRIMARY KEY, type_id INTEGER NOT NULL,"
    " agg_id TEXT NOT NULL, UNIQUE(type_id, agg_id));" HEADS_SQL
    "CREATE TABLE es_events(pos INTEGER PRIMARY KEY, stream INTEGER NOT NULL,"
    " version INTEGER NOT NULL, prev INTEGER NOT NULL, type_id INTEGER NOT NULL,"
    " envelope BLOB NOT NULL);" SNAPSHOTS_VIEW_SQL HEADS_GUARD_SQL COMMANDS_SQL("es_commands")
        DLQ_RECORDS_SQL SCHEMAS_SQL
    "INSERT INTO es_meta(key, value) VALUES ('schema_version', '6');";

/* Version 1 kept heads and snapshots (state type as text) in es_streams itself. */
static const char migrate_v1_sql[] = HEADS_SQL
    "INSERT OR IGNORE INTO es_types(name)"
    " SELECT DISTINCT snap_type FROM es_streams WHERE snap_type IS NOT NULL;"
    "INSERT INTO es_heads(stream, version, head, snap_version, snap_type, snap_state, snap_at)"
    " SELECT s.id, s.version, s.head, s.snap_version, t.id, s.snap_state, s.snap_at"
    " FROM es_streams s LEFT JOIN es_types t ON t.name = s.snap_type;"
    "DROP VIEW es_snapshots;"
    "CREATE TABLE es_streams_v2(id INTEGER PRIMARY KEY, type_id INTEGER NOT NULL,"
    " agg_id TEXT NOT NULL, UNIQUE(type_id, agg_id));"
    "INSERT INTO es_streams_v2(id, type_id, agg_id) SELECT id, type_id, agg_id FROM es_streams;"
    "DROP TABLE es_streams;"
    "ALTER TABLE es_streams_v2 RENAME TO es_streams;" SNAPSHOTS_VIEW_SQL DLQ_RECORDS_SQL
    "UPDATE es_meta SET value = '2' WHERE key = 'schema_version';";

/* Version 2 kept no fingerprint with a command id: its ids keep none (NULL), and answer as
 * duplicates unchecked, as they did. */
static const char migrate_v2_sql[] = "ALTER TABLE es_commands ADD COLUMN fingerprint BLOB;"
                                     "UPDATE es_meta SET value = '3' WHERE key = 'schema_version';";

/* Version 3 had no schema catalogue. */
static const char migrate_v3_sql[] =
    SCHEMAS_SQL "UPDATE es_meta SET value = '4' WHERE key = 'schema_version';";

/* Version 4 kept es_commands keyed by the id. Its ids count as first run at the upgrade, so
 * each keeps one whole window. */
static const char migrate_v4_sql[] = COMMANDS_SQL(
    "es_commands_v5") "INSERT INTO es_commands_v5(id, type_id, agg_id, outcome, first_version,"
                      " last_version, version, reason, fingerprint, at)"
                      " SELECT id, type_id, agg_id, outcome, first_version, last_version, version,"
                      " reason, fingerprint,"
                      " CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
                      " FROM es_commands;"
                      "DROP TABLE es_commands;"
                      "ALTER TABLE es_commands_v5 RENAME TO es_commands;"
                      "UPDATE es_meta SET value = '5' WHERE key = 'schema_version';";

/* Version 5 wrote every head at every commit: its es_heads is whole, and heads_from (the
 * deferred heads, tail_heads) absent. Older eskits refuse version 6 at open, since they would
 * trust an es_heads that misses the log's tail; HEADS_GUARD stops one that had the file open
 * before the upgrade. */
static const char migrate_v5_sql[] =
    HEADS_GUARD_SQL "UPDATE es_meta SET value = '6' WHERE key = 'schema_version';";

/* Multi-row statements come in these sizes, largest first; n rows take at most a few. */
static const size_t row_sizes[] = {64, 8, 1};
#define N_ROW_SIZES (sizeof row_sizes / sizeof *row_sizes)

typedef struct multi_stmt {
    sqlite3_stmt *st[N_ROW_SIZES];
} multi_stmt;

/* Positions are left to SQLite (MAX(pos) + 1, found at the right edge without a seek; an
 * explicit pos costs a search from the root); flush_queue checks they are the ones promised. */
#define EVENT_COLS 5
static const char put_events_sql[] =
    "INSERT INTO es_events(stream, version, prev, type_id, envelope) VALUES ";
/* Command records of a transaction, written at its commit in the order they came. */
#define COMMAND_COLS 10
static const char put_commands_sql[] = "INSERT INTO es_commands(id, type_id, agg_id, outcome, "
                                       "first_version, last_version, version, reason, "
                                       "fingerprint, at) VALUES ";
/* Streams created in a transaction, written with its events (ids checked as positions are). */
#define STREAM_COLS 2
static const char put_streams_sql[] = "INSERT INTO es_streams(type_id, agg_id) VALUES ";
/* Upserts: a stream gets its head row with its first batch. */
#define HEAD_COLS 3
static const char put_heads_sql[] = "INSERT INTO es_heads(stream, version, head) VALUES ";
static const char put_heads_tail[] =
    " ON CONFLICT(stream) DO UPDATE SET version = excluded.version, head = excluded.head";
/* A row with its snapshot is written whole, so REPLACE (delete, then insert) does what the
 * upsert did for about a tenth less than its conflict branch (measured on 10k head rows). */
#define SNAP_COLS 7
static const char put_snaps_sql[] = "INSERT OR REPLACE INTO es_heads(stream, version, head, "
                                    "snap_version, snap_type, snap_state, snap_at) VALUES ";

/* An event appended in this transaction and not yet in es_events. */
typedef struct queued_event {
    int64_t pos, stream, version, prev, type_id;
    size_t off, len; /* envelope bytes in sqlite_log.queued_bytes */
} queued_event;

/* A stream created in this transaction and not yet in es_streams. */
typedef struct queued_stream {
    struct stream_entry *entry; /* pinned until written */
    int64_t type_id;
    size_t off, len; /* aggregate id bytes in sqlite_log.queued_bytes */
} queued_stream;

/* A command record of this transaction, not yet in es_commands; its strings are NUL-terminated
 * in sqlite_log.cmd_bytes (reason: -1 when it has none). */
typedef struct queued_command {
    size_t id, type, agg;
    ptrdiff_t reason;
    int64_t type_id;
    int outcome;
    uint64_t first_version, last_version, version;
    int has_fingerprint;
    uint8_t fingerprint[ES_FINGERPRINT_LEN];
    uint32_t hash; /* in ids */
    int64_t at;
} queued_command;

/*
 * The idempotency window (idempotency.window.ms and .ids, docs/idempotency.md). ids finds the
 * window's ids by seq; it is built before the first write transaction takes the lock (or at
 * the first lookup outside one), from the rows past seen: another
 * connection's commits are read at the first lookup after them (stale), this connection's are
 * added once its commit succeeded (pend), so a rollback leaves nothing to undo. An id whose row
 * is below low, older than ms or more than count ids behind the newest is forgotten; its row is
 * deleted from the left edge a bounded chunk at a time by the commits that follow.
 */
typedef struct id_window {
    long long ms, count; /* 0: no bound */
    es_id_index ids;
    int built, stale;
    int64_t seen;   /* the newest seq ids has read */
    int64_t low;    /* rows below it are pruned */
    int64_t due_ms; /* when the oldest row left expires: no pruning is due before */
    uint32_t *pend; /* hashes of this transaction's rows, from pend_first on */
    size_t n_pend, cap_pend;
    int64_t pend_first;
    int64_t new_low, new_due_ms; /* this transaction's pruning, taken at its commit */
} id_window;

typedef struct type_entry {
    char *name;
    int64_t id;
} type_entry;

/*
 * <db>-head. SQLite drops every WAL frame from the first whose checksum fails, and
 * integrity_check then passes on the shorter log: acknowledged events gone without a word. So
 * every durable commit (sqlite.synchronous full or extra) raises the end recorded here to its
 * last position, after the commit's WAL fsync: the file may be behind the log (its page not yet
 * written back at a power loss, writers with synchronous=normal), never ahead. It is mmapped and
 * raised by an atomic max, so writers in several processes keep it monotonic without a lock or
 * a system call. 128 bytes, native byte order (a local file, like the -shm).
 */
#define HEAD_MAGIC "eskit-head 1\n"
typedef struct head_page {
    char magic[16];  /* HEAD_MAGIC, NUL-padded */
    char log_id[48]; /* es_meta's log_id: a head file of another log is not compared */
    int64_t end;     /* position of the last event of a durable commit; 0: none yet */
    char unused[56];
} head_page;
#define LOG_ID_CAP sizeof(((head_page *)0)->log_id)

/*
 * Deferred heads. A commit does not write its streams' es_heads rows (nor their snapshots):
 * they wait here, and es_meta's heads_from says that es_heads holds every event below it, so
 * the heads of the streams with events from heads_from on are those events' (a scan of the
 * log's tail, at most sqlite.heads.defer.events of them, rebuilds this map after a restart, a
 * crash or a rollback). A commit writes them all and clears heads_from once the tail holds
 * that many events (0: at every commit) or HEADS_DEFER_BYTES of snapshots, when it seeds a
 * stream, when another connection wrote since our last transaction (two writers taking turns
 * then each write their heads, as every commit did before), and at close. A batch over
 * thousands of streams rewrote es_heads' pages at every commit (80 of a batch's 167 WAL pages
 * over 10,000 streams). Snapshots waiting here are lost by a crash, which costs a longer fold
 * at the next load, never a wrong state. The engine does not even hand most of them over:
 * while heads_due says 0 it keeps their states back and puts them at the commit that writes
 * the heads (engine.c, write_due_snapshots), bounded by its own DUE_BYTES_MAX.
 */
#define HEADS_DEFER_BYTES (2u << 20)

typedef struct tail_head {
    int64_t stream; /* 0: a free slot */
    uint64_t version;
    int64_t head;
    es_snapshot_t *snap; /* newest snapshot not in es_heads (snap_cap bytes), or NULL */
    size_t snap_cap;
    int64_t snap_type_id;
    int has_snap;
} tail_head;

typedef struct tail_heads {
    tail_head *slots; /* open addressing by stream id, cap a power of two */
    size_t cap, n, snap_bytes;
    int64_t from;  /* es_meta heads_from as last read or written; 0: es_heads holds every head */
    int64_t seen;  /* the position after the last event read into the map */
    int built;     /* the map is that of the file as of data_version; 0: scan it again */
    int mine;      /* this connection deferred heads: it writes them at close */
    long long max; /* sqlite.heads.defer.events; 0: no deferring */
} tail_heads;

typedef struct sqlite_log {
    es_log_t base;
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st[S_COUNT];
    es_sql_tx tx; /* BEGIN, COMMIT and ROLLBACK, prepared */
    int in_tx;
    type_entry *types; /* cache of es_types; dropped on rollback */
    size_t n_types, cap_types;
    char *cmd_reason, *cmd_type, *cmd_agg; /* storage behind find_command's record */
    char *record_key;                      /* ... and behind lg_record_key's answer */
    es_snapshot_src *snap_src;             /* the writer's snapshots kept back (snapshot_source) */
    void *snap_src_opaque;
    int writing; /* a write transaction is open: the cache is live */
    int64_t data_version;
    es_lru_t *streams;         /* stream_entry by type id + aggregate id */
    struct stream_entry *last; /* the entry found last, under last_key: a command reads its
                                  stream's version and then appends to it */
    char last_key[sizeof(int64_t) + ES_MAX_ID_LEN];
    size_t last_klen;
    struct stream_entry **dirty; /* entries to write at commit (pinned until then) */
    size_t n_dirty, cap_dirty;
    struct flush_key *order; /* the deferred heads, sorted for the flush */
    size_t cap_order;
    multi_stmt put_events, put_heads, put_snaps, put_streams, put_commands;
    queued_event *queued; /* written before anything reads es_events, and at commit */
    size_t n_queued, cap_queued;
    es_buf_t queued_bytes;
    int64_t next_pos;           /* position of the next appended event; 0: not read yet */
    queued_stream *new_streams; /* written before the queued events, which refer to them */
    size_t n_new_streams, cap_new_streams;
    int64_t next_stream;  /* id of the next created stream; 0: not read yet */
    queued_command *cmds; /* written at commit; found by find_command before that */
    size_t n_cmds, cap_cmds;
    es_buf_t cmd_bytes;
    es_lru_t *cmd_index; /* command id -> index + 1 into cmds */
    id_window win;
    unsigned flags;    /* ES_LOG_* it was opened with */
    head_page *head;   /* <db>-head mapped; NULL when commits do not keep it */
    int64_t tx_end;    /* position of the last event appended in this transaction; 0: none */
    int64_t tx_first;  /* position of its first event; 0: none */
    int flush_now;     /* this transaction writes every deferred head (see tail_heads) */
    int others_wrote;  /* ... because another connection wrote since our last transaction */
    int tail_touched;  /* this transaction's commit changed tail: a rollback rebuilds it */
    int heads_written; /* ... and wrote every head (or else deferred them from heads_from) */
    int64_t heads_from;
    tail_heads tail;
    int64_t recorded_end, opened_end; /* the head file's end (-1: none) and ours, at open */
    char head_why[512];               /* why a head file present is not used; "" when it is */
    char log_id[LOG_ID_CAP];
    es_db_stamp stamp; /* read-only: the file before it was opened, to tell a writer's arrival */
    int changed;       /* read-only: the head check failed because a writer came meanwhile */
} sqlite_log;

typedef struct stream_row {
    int64_t id; /* 0: the stream does not exist */
    uint64_t version;
    int64_t head;
} stream_row;

/* The largest snapshot block a cached stream keeps after its commit: the cache then holds at
 * most cache.aggregates of them (10k: 5 MiB), not a copy of every big state. */
#define SNAP_KEEP_MAX 512

typedef struct stream_entry {
    stream_row row;
    int head_dirty, snap_dirty;
    int unwritten;       /* created in this transaction; its es_streams row is queued */
    es_snapshot_t *snap; /* pending snapshot (one allocation), written at commit; a block of
                            up to SNAP_KEEP_MAX bytes stays for the next batch's (snap_cap) */
    size_t snap_cap;
    int64_t snap_type_id;
} stream_entry;

/* Raises the recorded end to pos unless another writer raised it further. */
static void head_raise(head_page *h, int64_t pos) {
    int64_t cur = __atomic_load_n(&h->end, __ATOMIC_RELAXED);
    while (cur < pos &&
           !__atomic_compare_exchange_n(&h->end, &cur, pos, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
}

static void free_entry(void *v) {
    stream_entry *e = v;
    free(e->snap);
    free(e);
}

static int entry_dirty(const stream_entry *e) {
    return e->head_dirty || e->snap_dirty;
}

/* Evicting an entry whose row is not written would lose the stream's id. */
static int entry_pinned(const void *v) {
    const stream_entry *e = v;
    return entry_dirty(e) || e->unwritten;
}

static size_t tail_slot(const tail_heads *t, int64_t stream) {
    return (size_t)(((uint64_t)stream * 0x9E3779B97F4A7C15ULL) >> 32) & (t->cap - 1);
}

static tail_head *tail_find(const tail_heads *t, int64_t stream) {
    if (!t->n)
        return NULL;
    for (size_t i = tail_slot(t, stream);; i = (i + 1) & (t->cap - 1)) {
        if (t->slots[i].stream == stream)
            return &t->slots[i];
        if (!t->slots[i].stream)
            return NULL;
    }
}

/* The stream's slot, made when absent (version and head 0); NULL when out of memory. */
static tail_head *tail_put(tail_heads *t, int64_t stream) {
    if (2 * (t->n + 1) > t->cap) { /* at most half full */
        size_t cap = t->cap ? t->cap * 2 : 1024;
        tail_head *grown = calloc(cap, sizeof *grown), *old = t->slots;
        if (!grown)
            return NULL;
        size_t old_cap = t->cap;
        t->slots = grown;
        t->cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].stream) {
                size_t j = tail_slot(t, old[i].stream);
                while (grown[j].stream)
                    j = (j + 1) & (cap - 1);
                grown[j] = old[i];
            }
        free(old);
    }
    size_t i = tail_slot(t, stream);
    while (t->slots[i].stream && t->slots[i].stream != stream)
        i = (i + 1) & (t->cap - 1);
    if (!t->slots[i].stream) {
        t->slots[i] = (tail_head){.stream = stream};
        t->n++;
    }
    return &t->slots[i];
}

/* Forgets every deferred head (their rows are in es_heads, or the map is to be read again). */
static void tail_clear(tail_heads *t) {
    for (size_t i = 0; t->n && i < t->cap; i++)
        free(t->slots[i].snap);
    if (t->n)
        memset(t->slots, 0, t->cap * sizeof *t->slots);
    t->n = t->snap_bytes = 0;
    t->from = t->seen = 0;
    t->mine = 0;
}

static es_err sql_fail(sqlite_log *l, int rc, const char *what, es_error_t *err) {
    return es_sql_fail_file(l->db, rc, l->path, what, err);
}

static sqlite3_stmt *stmt(sqlite_log *l, int which) {
    sqlite3_stmt *s = l->st[which];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

/* Runs a statement that returns no rows. */
static es_err step_done(sqlite_log *l, sqlite3_stmt *s, const char *what, es_error_t *err) {
    return es_sql_step_done(l->db, l->path, s, what, err);
}

static void drop_type_cache(sqlite_log *l) {
    for (size_t i = 0; i < l->n_types; i++)
        free(l->types[i].name);
    l->n_types = 0;
}

static void multi_reset(multi_stmt *m) {
    es_sql_reset_all(m->st, N_ROW_SIZES);
}

/* Room for need items of size bytes in *items (capacity *cap, doubled from 256 as needed). */
static int reserve_items(void *items, size_t *cap, size_t need, size_t size) {
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    void *grown = realloc(*(void **)items, c * size);
    if (!grown)
        return -1;
    *(void **)items = grown;
    *cap = c;
    return 0;
}

/* Binds row i of a multi-row write to the parameters from first + 1 on. */
typedef void bind_row_fn(sqlite_log *l, sqlite3_stmt *s, int first, size_t i, const void *ctx);

/* Writes n rows of cols columns with as few statements as the sizes allow. */
static es_err put_rows(sqlite_log *l, multi_stmt *m, int cols, size_t n, bind_row_fn *bind,
                       const void *ctx, const char *what, es_error_t *err) {
    size_t done = 0;
    es_err e = ES_OK;
    for (size_t k = 0; e == ES_OK && k < N_ROW_SIZES; k++) {
        for (size_t rows = row_sizes[k]; e == ES_OK && n - done >= rows; done += rows) {
            for (size_t r = 0; r < rows; r++)
                bind(l, m->st[k], (int)r * cols, done + r, ctx);
            e = step_done(l, m->st[k], what, err);
        }
    }
    return e;
}

/* put_rows for rows whose rowids were promised in order from MAX(rowid) + 1 (what SQLite gives
 * a row without one): the last row must have got want. */
static es_err put_promised_rows(sqlite_log *l, multi_stmt *m, int cols, size_t n, bind_row_fn *bind,
                                const void *ctx, int64_t want, const char *what, const char *table,
                                es_error_t *err) {
    es_err e = put_rows(l, m, cols, n, bind, ctx, what, err);
    int64_t got = sqlite3_last_insert_rowid(l->db);
    if (e == ES_OK && got != want)
        e = es_fail(err, ES_EIO,
                    "%s in %s: the last row went to rowid %lld, not %lld; was %s changed outside "
                    "eskit?",
                    what, l->path, (long long)got, (long long)want, table);
    return e;
}

static void bind_event(sqlite_log *l, sqlite3_stmt *s, int first, size_t i, const void *ctx) {
    const queued_event *q = (const queued_event *)ctx + i;
    sqlite3_bind_int64(s, first + 1, q->stream);
    sqlite3_bind_int64(s, first + 2, q->version);
    sqlite3_bind_int64(s, first + 3, q->prev);
    sqlite3_bind_int64(s, first + 4, q->type_id);
    sqlite3_bind_blob(s, first + 5, l->queued_bytes.data + q->off, (int)q->len, SQLITE_STATIC);
}

static void drop_commands(sqlite_log *l) {
    l->n_cmds = 0;
    l->cmd_bytes.len = 0;
    es_lru_clear(l->cmd_index);
}

static void drop_queue(sqlite_log *l) {
    drop_commands(l);
    l->n_queued = 0;
    l->n_new_streams = 0;
    l->queued_bytes.len = 0;
    l->next_pos = 0;
    l->next_stream = 0;
}

static void bind_stream(sqlite_log *l, sqlite3_stmt *s, int first, size_t i, const void *ctx) {
    const queued_stream *q = (const queued_stream *)ctx + i;
    sqlite3_bind_int64(s, first + 1, q->type_id);
    sqlite3_bind_text(s, first + 2, (const char *)l->queued_bytes.data + q->off, (int)q->len,
                      SQLITE_STATIC);
}

/* Writes the streams created in this transaction, with as few statements as the events; their
 * ids were promised in order from MAX(id) + 1, which SQLite gives rows without one. */
static es_err flush_streams(sqlite_log *l, es_error_t *err) {
    if (!l->n_new_streams)
        return ES_OK;
    es_err e = put_promised_rows(l, &l->put_streams, STREAM_COLS, l->n_new_streams, bind_stream,
                                 l->new_streams, l->new_streams[l->n_new_streams - 1].entry->row.id,
                                 "creating streams", "es_streams", err);
    if (e == ES_OK) {
        for (size_t i = 0; i < l->n_new_streams; i++)
            l->new_streams[i].entry->unwritten = 0;
        l->n_new_streams = 0;
    }
    return e;
}

/* Writes the queued events to es_events: at commit, and before anything in the transaction
 * reads es_events. */
static const char *cmd_str(const sqlite_log *l, size_t off) {
    return (const char *)l->cmd_bytes.data + off;
}

static void bind_command(sqlite_log *l, sqlite3_stmt *s, int first, size_t i, const void *ctx) {
    const queued_command *q = (const queued_command *)ctx + i;
    sqlite3_bind_text(s, first + 1, cmd_str(l, q->id), -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, first + 2, q->type_id);
    sqlite3_bind_text(s, first + 3, cmd_str(l, q->agg), -1, SQLITE_STATIC);
    sqlite3_bind_int(s, first + 4, q->outcome);
    sqlite3_bind_int64(s, first + 5, (int64_t)q->first_version);
    sqlite3_bind_int64(s, first + 6, (int64_t)q->last_version);
    sqlite3_bind_int64(s, first + 7, (int64_t)q->version);
    if (q->reason >= 0)
        sqlite3_bind_text(s, first + 8, cmd_str(l, (size_t)q->reason), -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, first + 8);
    if (q->has_fingerprint)
        sqlite3_bind_blob(s, first + 9, q->fingerprint, ES_FINGERPRINT_LEN, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, first + 9);
    sqlite3_bind_int64(s, first + 10, q->at);
}

/* Writes the transaction's command records on es_commands' right edge; their seqs follow one
 * another (the write lock is ours), and their hashes wait in pend for the commit. */
static es_err flush_commands(sqlite_log *l, es_error_t *err) {
    id_window *w = &l->win;
    if (!l->n_cmds)
        return ES_OK;
    if (reserve_items(&w->pend, &w->cap_pend, l->n_cmds, sizeof *w->pend))
        return es_fail(err, ES_ENOMEM, "out of memory recording command ids");
    es_err e = put_rows(l, &l->put_commands, COMMAND_COLS, l->n_cmds, bind_command, l->cmds,
                        "recording command ids", err);
    if (e != ES_OK)
        return e;
    for (size_t i = 0; i < l->n_cmds; i++)
        w->pend[i] = l->cmds[i].hash;
    w->n_pend = l->n_cmds;
    w->pend_first = sqlite3_last_insert_rowid(l->db) - (int64_t)l->n_cmds + 1;
    drop_commands(l);
    return ES_OK;
}

static es_err flush_queue(sqlite_log *l, es_error_t *err) {
    es_err e = flush_streams(l, err);
    if (e != ES_OK || !l->n_queued) {
        if (e == ES_OK)
            l->queued_bytes.len = 0;
        return e;
    }
    e = put_promised_rows(l, &l->put_events, EVENT_COLS, l->n_queued, bind_event, l->queued,
                          l->queued[l->n_queued - 1].pos, "appending events", "es_events", err);
    if (e == ES_OK) {
        l->n_queued = 0;
        l->queued_bytes.len = 0;
    }
    return e;
}

static void drop_stream_cache(sqlite_log *l) {
    l->n_dirty = 0;
    l->last = NULL;
    es_lru_clear(l->streams);
}

/* Reads the deferred heads of what was committed since the map was last read: the events from
 * heads_from on, or only those after seen when the map is still that of heads_from. */
static es_err tail_catch_up(sqlite_log *l, es_error_t *err) {
    tail_heads *t = &l->tail;
    /* Inside a write transaction the scan may read this transaction's own queued events
     * (flushed for a read): its rollback must then take the map with it. */
    if (l->writing)
        l->tail_touched = 1;
    sqlite3_stmt *s = stmt(l, S_HEADS_FROM);
    int rc = sqlite3_step(s);
    int64_t from = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(l, rc, "reading where es_heads ends", err);
    int mine = t->mine && from == t->from;
    if (!from || from != t->from || !t->seen)
        tail_clear(t); /* written by another connection, or a new cycle: read it whole */
    t->mine = mine;
    t->from = from;
    if (!from) {
        t->built = 1;
        return ES_OK;
    }
    s = stmt(l, S_TAIL);
    sqlite3_bind_int64(s, 1, t->seen > from ? t->seen : from);
    es_err e = ES_OK;
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t pos = sqlite3_column_int64(s, 0);
        tail_head *h = tail_put(t, sqlite3_column_int64(s, 1));
        if (!h)
            e = es_fail(err, ES_ENOMEM, "out of memory reading the stream heads of %s", l->path);
        else {
            h->version = (uint64_t)sqlite3_column_int64(s, 2);
            h->head = pos;
        }
        t->seen = pos + 1;
    }
    sqlite3_reset(s);
    if (e == ES_OK && rc != SQLITE_DONE)
        e = sql_fail(l, rc, "reading the stream heads from the log's tail", err);
    if (e != ES_OK) {
        tail_clear(t);
        if (!l->writing) /* no entry loaded before the next scan outlives it */
            drop_stream_cache(l);
        return e;
    }
    if (!t->seen)
        t->seen = from;
    t->built = 1;
    return ES_OK;
}

/* Another connection committed since we last looked: what we cached may be stale. */
static es_err check_data_version(sqlite_log *l, es_error_t *err) {
    sqlite3_stmt *s = stmt(l, S_DATA_VERSION);
    int rc = sqlite3_step(s);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW)
        return sql_fail(l, rc, "reading data_version", err);
    if (v != l->data_version) {
        drop_stream_cache(l);
        l->win.stale = 1;
        if (l->data_version != -1 && l->tail.built)
            l->flush_now = l->others_wrote = 1; /* another connection writes too: no heads
                                                   wait on our side */
        l->tail.built = 0; /* read again when a head is next looked up (tail_ready) */
    }
    l->data_version = v;
    return ES_OK;
}

/* The deferred heads as of this transaction: readers of the log alone never scan its tail. */
static es_err tail_ready(sqlite_log *l, es_error_t *err) {
    return l->tail.built ? ES_OK : tail_catch_up(l, err);
}

static es_err refuse_readonly(const sqlite_log *l, const char *what, es_error_t *err) {
    return es_fail(err, ES_ESTATE,
                   "%s: %s was opened read-only, for inspection; open it with "
                   "es_store_new to write",
                   what, l->path);
}

static void ids_drop(id_window *w) {
    es_id_index_free(&w->ids);
    w->built = 0;
    w->seen = w->low = 0;
}

/* Reads the rows past seen into the index (all of them the first time). */
static es_err ids_catch_up(sqlite_log *l, es_error_t *err) {
    id_window *w = &l->win;
    sqlite3_stmt *s = stmt(l, S_CMD_SINCE);
    es_err e = ES_OK;
    int rc;
    sqlite3_bind_int64(s, 1, w->seen);
    while (e == ES_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(s, 0);
        const char *id = (const char *)sqlite3_column_text(s, 1);
        if (!w->built && !w->seen)
            w->low = seq;
        if (es_id_index_add(&w->ids, es_id_index_hash(&w->ids, id ? id : ""), seq, w->low))
            e = es_fail(err, ES_ENOMEM, "out of memory indexing the command ids of %s", l->path);
        w->seen = seq;
    }
    sqlite3_reset(s);
    if (e == ES_OK && rc != SQLITE_DONE)
        e = sql_fail(l, rc, "reading command ids", err);
    if (e != ES_OK) {
        ids_drop(w);
        return e;
    }
    w->built = 1;
    w->stale = 0;
    return ES_OK;
}

/* Deletes the window's expired rows from the left edge, at most a chunk a little larger than
 * what the transaction adds (so pruning keeps up and no commit deletes millions); the newest
 * row stays, so seqs never go back. Runs before this transaction's rows are written. */
static es_err prune_ids(sqlite_log *l, es_error_t *err) {
    id_window *w = &l->win;
    int64_t now = es_now_us() / 1000, stop = w->low, due = now;
    w->new_low = w->low;
    w->new_due_ms = w->due_ms;
    if (!w->built || (!w->ms && !w->count))
        return ES_OK;
    es_err e = w->stale ? ids_catch_up(l, err) : ES_OK;
    int over = w->count && w->seen - w->low + 1 > w->count;
    if (e != ES_OK || (!over && (!w->ms || now < w->due_ms)))
        return e;
    sqlite3_stmt *s = stmt(l, S_CMD_EDGE);
    sqlite3_bind_int64(s, 1, w->low);
    sqlite3_bind_int64(s, 2, 1000 + 2 * (int64_t)l->n_cmds);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(s, 0), at = sqlite3_column_int64(s, 1);
        stop = seq;
        if (seq >= w->seen) {
            due = now + 1000;
            break;
        }
        if (!(w->ms && at < now - w->ms) && !(w->count && seq <= w->seen - w->count)) {
            due = w->ms ? at + w->ms : INT64_MAX;
            break;
        }
        stop = seq + 1;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(l, rc, "reading the oldest command ids", err);
    if (stop > w->low) {
        s = stmt(l, S_CMD_PRUNE);
        sqlite3_bind_int64(s, 1, stop);
        if ((e = step_done(l, s, "forgetting command ids past the idempotency window", err)))
            return e;
    }
    w->new_low = stop;
    w->new_due_ms = due;
    return ES_OK;
}

/* After a commit: its pruning and its rows are now everyone's, and the index's. */
static void ids_committed(sqlite_log *l) {
    id_window *w = &l->win;
    w->low = w->new_low;
    w->due_ms = w->new_due_ms;
    if (w->built && w->n_pend && w->pend_first != w->seen + 1)
        w->stale = 1; /* rows before ours were not read: the next catch-up reads ours too */
    else if (w->built && w->n_pend) {
        for (size_t i = 0; i < w->n_pend; i++)
            if (es_id_index_add(&w->ids, w->pend[i], w->pend_first + (int64_t)i, w->low)) {
                ids_drop(w); /* built again at the next lookup */
                break;
            }
        if (w->built)
            w->seen = w->pend_first + (int64_t)w->n_pend - 1;
    }
    w->n_pend = 0;
}

static es_err lg_begin(es_log_t *base, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    if (l->flags & ES_LOG_READONLY)
        return refuse_readonly(l, "starting a write transaction", err);
    if (l->in_tx)
        return es_fail(err, ES_ESTATE, "a transaction is already open on %s", l->path);
    /* The window's ids are read before the write lock is taken, not under it: a million of
     * them take half a second, and other writers wait on the lock. What commits meanwhile is
     * caught up inside (data_version). */
    es_err rc = l->win.built ? ES_OK : ids_catch_up(l, err);
    if (rc == ES_OK)
        rc = es_sql_begin(&l->tx, ES_SQL_IMMEDIATE, "starting a write transaction", err);
    if (rc != ES_OK)
        return rc;
    l->in_tx = 1;
    rc = check_data_version(l, err);
    if (rc != ES_OK) {
        es_sql_rollback(&l->tx);
        l->in_tx = 0;
        return rc;
    }
    l->writing = 1;
    return ES_OK;
}

static void lg_rollback(es_log_t *base) {
    sqlite_log *l = (sqlite_log *)base;
    if (!l->in_tx)
        return;
    es_sql_reset_all(l->st, S_COUNT);
    multi_reset(&l->put_events);
    multi_reset(&l->put_heads);
    multi_reset(&l->put_snaps);
    multi_reset(&l->put_streams);
    multi_reset(&l->put_commands);
    es_sql_rollback(&l->tx);
    l->in_tx = 0;
    l->writing = 0;
    l->tx_end = 0;
    if (l->tail_touched) { /* read again from the file at the next transaction */
        tail_clear(&l->tail);
        l->tail.built = 0;
    }
    l->tail_touched = l->heads_written = l->flush_now = l->others_wrote = 0;
    l->tx_first = l->heads_from = 0;
    drop_type_cache(l); /* ids inserted by the rolled-back transaction are gone */
    drop_stream_cache(l);
    drop_queue(l);
    l->win.n_pend = 0;
}

/* Entries with a snapshot first, then by rowid: in rowid order each upsert finds its row next
 * to the previous one (10k streams: the flush took a third less CPU than in random order). */
typedef struct flush_key {
    uint64_t key; /* no snapshot: bit 63; then the rowid */
    const tail_head *h;
} flush_key;

static void bind_head(sqlite_log *l, sqlite3_stmt *s, int first, size_t i, const void *ctx) {
    const tail_head *h = ((const flush_key *)ctx)[i].h;
    (void)l;
    sqlite3_bind_int64(s, first + 1, h->stream);
    sqlite3_bind_int64(s, first + 2, (int64_t)h->version);
    sqlite3_bind_int64(s, first + 3, h->head);
    if (!h->has_snap)
        return;
    const es_snapshot_t *snap = h->snap;
    sqlite3_bind_int64(s, first + 4, (int64_t)snap->version);
    sqlite3_bind_int64(s, first + 5, h->snap_type_id);
    sqlite3_bind_blob(s, first + 6, snap->state_len ? (const void *)snap->state : "",
                      (int)snap->state_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, first + 7, snap->taken_at_us);
}

/* Sorts keys[0..n) by key: an insertion sort below 16, else quicksort on a median of three
 * (qsort's calls through a comparison function were a tenth of the flush). */
static void sort_flush_keys(flush_key *k, size_t n) {
    while (n > 16) {
        size_t mid = n / 2, last = n - 1;
        if (k[mid].key < k[0].key) {
            flush_key t = k[mid];
            k[mid] = k[0];
            k[0] = t;
        }
        if (k[last].key < k[0].key) {
            flush_key t = k[last];
            k[last] = k[0];
            k[0] = t;
        }
        if (k[last].key < k[mid].key) {
            flush_key t = k[last];
            k[last] = k[mid];
            k[mid] = t;
        }
        uint64_t pivot = k[mid].key;
        size_t i = 0, j = last;
        for (;;) { /* Hoare partition: [0, j] <= pivot <= [j + 1, n) */
            while (k[i].key < pivot)
                i++;
            while (k[j].key > pivot)
                j--;
            if (i >= j)
                break;
            flush_key t = k[i];
            k[i++] = k[j];
            k[j--] = t;
        }
        /* Recurse into the smaller side, loop on the larger: the stack stays logarithmic. */
        if (j + 1 < n - j - 1) {
            sort_flush_keys(k, j + 1);
            k += j + 1;
            n -= j + 1;
        } else {
            sort_flush_keys(k + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    for (size_t i = 1; i < n; i++) {
        flush_key t = k[i];
        size_t j = i;
        for (; j > 0 && k[j - 1].key > t.key; j--)
            k[j] = k[j - 1];
        k[j] = t;
    }
}

/* Writes every deferred head into es_heads, and says es_heads is whole again. */
static es_err flush_heads(sqlite_log *l, es_error_t *err) {
    tail_heads *t = &l->tail;
    size_t n = 0, n_snap = 0;
    if (t->n && reserve_items(&l->order, &l->cap_order, t->n, sizeof *l->order))
        return es_fail(err, ES_ENOMEM, "out of memory writing stream heads");
    for (size_t i = 0; n < t->n && i < t->cap; i++) {
        const tail_head *h = &t->slots[i];
        if (!h->stream)
            continue;
        l->order[n++] = (flush_key){(h->has_snap ? 0 : 1ULL << 63) | (uint64_t)h->stream, h};
        n_snap += h->has_snap != 0;
    }
    sort_flush_keys(l->order, n);
    /* heads_from goes first: es_heads' triggers refuse writes while it is set (HEADS_GUARD). */
    es_err e = t->from
                   ? step_done(l, stmt(l, S_HEADS_FROM_CLEAR), "writing where es_heads ends", err)
                   : ES_OK;
    if (e == ES_OK)
        e = put_rows(l, &l->put_snaps, SNAP_COLS, n_snap, bind_head, l->order,
                     "writing stream heads", err);
    if (e == ES_OK)
        e = put_rows(l, &l->put_heads, HEAD_COLS, n - n_snap, bind_head, l->order + n_snap,
                     "writing stream heads", err);
    return e;
}

/* Whether a commit whose tail begins at from writes every deferred head (see tail_heads). */
static int heads_due_from(const sqlite_log *l, int64_t from) {
    const tail_heads *t = &l->tail;
    return l->flush_now || !from || !t->max || l->next_pos - from >= t->max ||
           t->snap_bytes >= HEADS_DEFER_BYTES;
}

/* What keep_heads will decide, as the transaction stands: 2 when it writes them and another
 * connection may have written since (or the tail is not read yet), 1 when it writes them. */
static int lg_heads_due(es_log_t *base) {
    const sqlite_log *l = (const sqlite_log *)base;
    const tail_heads *t = &l->tail;
    if (!t->built || l->others_wrote)
        return 2;
    return heads_due_from(l, t->from ? t->from : l->tx_first);
}

/* Takes the transaction's changed streams into the deferred heads, and writes them all when
 * that is due (see tail_heads); otherwise a first deferred transaction records heads_from. */
static es_err keep_heads(sqlite_log *l, es_error_t *err) {
    tail_heads *t = &l->tail;
    es_err rc = tail_ready(l, err);
    if (rc != ES_OK || (!l->n_dirty && !(l->flush_now && t->from)))
        return rc;
    l->tail_touched = 1; /* from here a rollback leaves the map unlike the file */
    for (size_t i = 0; i < l->n_dirty; i++) {
        stream_entry *e = l->dirty[i];
        tail_head *h = tail_put(t, e->row.id);
        if (!h)
            return es_fail(err, ES_ENOMEM, "out of memory keeping stream heads");
        h->version = e->row.version;
        h->head = e->row.head;
        if (!e->snap_dirty)
            continue;
        /* The entry's block goes to the map, the map's old one back to the entry for reuse. */
        es_snapshot_t *snap = h->snap;
        size_t cap = h->snap_cap;
        t->snap_bytes += e->snap_cap - (h->has_snap ? cap : 0);
        h->snap = e->snap;
        h->snap_cap = e->snap_cap;
        h->snap_type_id = e->snap_type_id;
        h->has_snap = 1;
        e->snap = snap;
        e->snap_cap = cap;
    }
    int64_t from = t->from ? t->from : l->tx_first;
    int due = heads_due_from(l, from);
    l->heads_written = due;
    l->heads_from = from;
    if (due)
        return flush_heads(l, err);
    if (t->from)
        return ES_OK;
    sqlite3_stmt *s = stmt(l, S_META_PUT); /* stored as text, as es_meta's values are */
    sqlite3_bind_text(s, 1, "heads_from", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, from);
    return step_done(l, s, "writing where es_heads ends", err);
}

/* After a commit: the map is the file's again. */
static void heads_committed(sqlite_log *l) {
    tail_heads *t = &l->tail;
    /* Only a commit that took its streams into the map (keep_heads set heads_from) moves
     * where the map starts. One that only read the map (a transaction without events, say a
     * rejected command's record) leaves it where the file's heads_from is: taking its 0 made
     * the next commit start a tail of its own past another writer's deferred heads, which
     * es_heads then missed for good. */
    if (l->heads_written) {
        tail_clear(t);
    } else if (l->heads_from) {
        t->from = l->heads_from;
        t->mine = 1;
    }
    if (t->from && l->tx_end)
        t->seen = l->tx_end + 1;
    l->tail_touched = l->heads_written = l->flush_now = l->others_wrote = 0;
    l->tx_first = l->heads_from = 0;
}

static es_err lg_commit(es_log_t *base, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    es_err rc = flush_queue(l, err);
    if (rc == ES_OK)
        rc = keep_heads(l, err);
    if (rc == ES_OK)
        rc = prune_ids(l, err);
    if (rc == ES_OK)
        rc = flush_commands(l, err);
    if (rc == ES_OK)
        rc = es_sql_commit(&l->tx, "committing", err);
    if (rc != ES_OK) {
        lg_rollback(base);
        return rc;
    }
    ids_committed(l);
    if (l->head && l->tx_end)
        head_raise(l->head, l->tx_end);
    heads_committed(l);
    l->tx_end = 0;
    for (size_t i = 0; i < l->n_dirty; i++) {
        stream_entry *e = l->dirty[i];
        e->head_dirty = e->snap_dirty = 0;
        if (e->snap_cap > SNAP_KEEP_MAX) { /* a big state's block is not kept between batches */
            free(e->snap);
            e->snap = NULL;
            e->snap_cap = 0;
        }
    }
    l->n_dirty = 0;
    l->in_tx = 0;
    l->writing = 0;
    l->next_pos = 0; /* another connection may append before our next transaction */
    l->next_stream = 0;
    l->last = NULL;
    es_lru_trim(l->streams);
    return ES_OK;
}

static es_err mark_dirty(sqlite_log *l, stream_entry *e, es_error_t *err) {
    if (entry_dirty(e))
        return ES_OK; /* already listed */
    if (l->n_dirty == l->cap_dirty) {
        size_t cap = l->cap_dirty ? l->cap_dirty * 2 : 256;
        stream_entry **d = realloc(l->dirty, cap * sizeof *d);
        if (!d)
            return es_fail(err, ES_ENOMEM, "out of memory tracking changed streams");
        l->dirty = d;
        l->cap_dirty = cap;
    }
    l->dirty[l->n_dirty++] = e;
    return ES_OK;
}

/* Reads outside a write transaction get one consistent snapshot of their own. */
static es_err read_begin(sqlite_log *l, int *opened, es_error_t *err) {
    *opened = 0;
    if (l->in_tx)
        return ES_OK;
    es_err rc = es_sql_begin(&l->tx, ES_SQL_DEFERRED, "starting a read", err);
    if (rc == ES_OK) {
        l->in_tx = 1;
        *opened = 1;
        rc = check_data_version(l, err); /* the deferred heads of other connections' commits */
    }
    return rc;
}

static void read_end(sqlite_log *l, int opened) {
    if (!opened)
        return;
    es_sql_reset_all(l->st, S_COUNT);
    es_sql_commit(&l->tx, "ending a read", NULL);
    l->in_tx = 0;
}

static es_err cache_type(sqlite_log *l, const char *name, int64_t id) {
    if (l->n_types == l->cap_types) {
        size_t cap = l->cap_types ? l->cap_types * 2 : 8;
        type_entry *t = realloc(l->types, cap * sizeof *t);
        if (!t)
            return ES_ENOMEM;
        l->types = t;
        l->cap_types = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return ES_ENOMEM;
    l->types[l->n_types].name = copy;
    l->types[l->n_types].id = id;
    l->n_types++;
    return ES_OK;
}

/* The id of an aggregate type; 0 when it has none and create is false. */
static es_err type_id(sqlite_log *l, const char *name, int create, int64_t *id, es_error_t *err) {
    for (size_t i = 0; i < l->n_types; i++)
        if (!strcmp(l->types[i].name, name)) {
            *id = l->types[i].id;
            return ES_OK;
        }
    sqlite3_stmt *s = stmt(l, S_TYPE_GET);
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    *id = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(l, rc, "looking up an aggregate type", err);
    if (*id == 0 && create) {
        s = stmt(l, S_TYPE_PUT);
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        es_err e = step_done(l, s, "registering an aggregate type", err);
        if (e != ES_OK)
            return e;
        *id = sqlite3_last_insert_rowid(l->db);
    }
    if (*id && cache_type(l, name, *id) != ES_OK)
        return es_fail(err, ES_ENOMEM, "out of memory caching aggregate types");
    return ES_OK;
}

static es_err type_name(sqlite_log *l, int64_t id, char *out, size_t cap, es_error_t *err) {
    for (size_t i = 0; i < l->n_types; i++)
        if (l->types[i].id == id) {
            snprintf(out, cap, "%s", l->types[i].name);
            return ES_OK;
        }
    sqlite3_stmt *s = stmt(l, S_TYPE_NAME);
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(s, 0));
        cache_type(l, out, id);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW)
        return sql_fail(l, rc, "looking up an aggregate type name", err);
    return ES_OK;
}

static es_err select_stream(sqlite_log *l, int64_t tid, const char *id, stream_row *row,
                            es_error_t *err) {
    memset(row, 0, sizeof *row);
    es_err e = tail_ready(l, err);
    if (e != ES_OK)
        return e;
    sqlite3_stmt *s = stmt(l, S_STREAM_GET);
    sqlite3_bind_int64(s, 1, tid);
    sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        row->id = sqlite3_column_int64(s, 0);
        row->version = (uint64_t)sqlite3_column_int64(s, 1);
        row->head = sqlite3_column_int64(s, 2);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(l, rc, "looking up a stream", err);
    const tail_head *h = row->id ? tail_find(&l->tail, row->id) : NULL;
    if (h) { /* its newest events are past heads_from */
        row->version = h->version;
        row->head = h->head;
    }
    return ES_OK;
}

/* Creates the stream of entry e in this transaction: its id now, its row with the events. */
static es_err queue_stream(sqlite_log *l, int64_t tid, const char *id, size_t idlen,
                           stream_entry *e, es_error_t *err) {
    if (!l->next_stream) {
        sqlite3_stmt *s = stmt(l, S_STREAM_END);
        int rc = sqlite3_step(s);
        l->next_stream = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_reset(s);
        if (rc != SQLITE_ROW)
            return sql_fail(l, rc, "reading the next stream id", err);
    }
    size_t off = 0;
    if (reserve_items(&l->new_streams, &l->cap_new_streams, l->n_new_streams + 1,
                      sizeof *l->new_streams) ||
        es_buf_append(&l->queued_bytes, id, idlen, &off) != ES_OK)
        return es_fail(err, ES_ENOMEM, "out of memory creating streams");
    l->new_streams[l->n_new_streams++] = (queued_stream){e, tid, off, idlen};
    e->row = (stream_row){l->next_stream++, 0, 0};
    e->unwritten = 1;
    return ES_OK;
}

/* The cached entry of a stream, loading (and with create, creating) it when absent.
 * Only inside a write transaction. */
static es_err cached_stream(sqlite_log *l, int64_t tid, const char *id, int create,
                            stream_entry **out, es_error_t *err) {
    char key[sizeof l->last_key];
    size_t idlen = strlen(id), klen = sizeof tid + idlen;
    memcpy(key, &tid, sizeof tid);
    memcpy(key + sizeof tid, id, idlen);
    stream_entry *e = l->last && klen == l->last_klen && !memcmp(key, l->last_key, klen)
                          ? l->last
                          : es_lru_get(l->streams, key, klen);
    es_err rc = ES_OK;
    l->last = NULL; /* a put below may evict it */
    if (!e) {
        if (!(e = calloc(1, sizeof *e)))
            return es_fail(err, ES_ENOMEM, "out of memory caching a stream");
        if ((rc = select_stream(l, tid, id, &e->row, err)) != ES_OK) {
            free(e);
            return rc;
        }
        if (es_lru_put(l->streams, key, klen, e) != 0)
            return es_fail(err, ES_ENOMEM, "out of memory caching a stream");
    }
    if (e->row.id == 0 && create)
        rc = queue_stream(l, tid, id, idlen, e, err);
    l->last = e;
    memcpy(l->last_key, key, klen);
    l->last_klen = klen;
    *out = e;
    return rc;
}

/* A read-only lookup that found nothing asks again without the index (sql: any row means the
 * lookup was wrong): a damaged index can miss what its table holds, and "no events" would hide
 * the damage. Writers do not ask: a miss is what they see for every new aggregate. */
static es_err confirm_miss(sqlite_log *l, char *sql, const char *type, const char *id,
                           const char *damage, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    int rc = sql ? sqlite3_prepare_v2(l->db, sql, -1, &s, NULL) : SQLITE_NOMEM;
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    sqlite3_finalize(s);
    sqlite3_free(sql);
    if (rc == SQLITE_DONE)
        return ES_OK;
    if (rc != SQLITE_ROW)
        return sql_fail(l, rc, "looking for a stream", err);
    return es_fail(err, ES_EIO,
                   "%s/%s: %s is corrupt: %s; restore it from a backup, and run 'esctl verify' on "
                   "it to see what else is damaged",
                   type, id, l->path, damage);
}

static es_err confirm_stream_miss(sqlite_log *l, const char *type, const char *id, int64_t tid,
                                  const stream_row *row, es_error_t *err) {
    if (!tid)
        return confirm_miss(
            l, sqlite3_mprintf("SELECT 1 FROM es_types NOT INDEXED WHERE name = %Q", type), type,
            id, "the index of es_types misses this aggregate type, which the table holds", err);
    if (!row->id)
        return confirm_miss(
            l,
            sqlite3_mprintf("SELECT 1 FROM es_streams NOT INDEXED WHERE type_id = "
                            "%lld AND agg_id = %Q",
                            (long long)tid, id),
            type, id, "the index of es_streams misses this stream, which the table holds", err);
    if (!row->version)
        return confirm_miss(
            l,
            sqlite3_mprintf("SELECT 1 FROM es_events WHERE stream = %lld LIMIT 1",
                            (long long)row->id),
            type, id, "es_heads has no version for this stream, but es_events holds its events",
            err);
    return ES_OK;
}

/* Finds the stream; row->id is 0 when it does not exist (and create is false). *ent gets
 * its cache entry inside a write transaction, NULL otherwise. */
static es_err find_stream(sqlite_log *l, const char *type, const char *id, int create,
                          stream_row *row, int64_t *tid, stream_entry **ent, es_error_t *err) {
    memset(row, 0, sizeof *row);
    *ent = NULL;
    es_err e = type_id(l, type, create, tid, err);
    if (e == ES_OK && *tid && l->writing) {
        e = cached_stream(l, *tid, id, create, ent, err);
        if (e == ES_OK)
            *row = (*ent)->row;
        return e;
    }
    if (e == ES_OK && *tid) /* creating needs the write transaction */
        e = select_stream(l, *tid, id, row, err);
    if (e == ES_OK && (l->flags & ES_LOG_READONLY) && !row->version)
        e = confirm_stream_miss(l, type, id, *tid, row, err);
    return e;
}

/* Opens a read (unless a transaction is open) and finds the stream; the caller ends the read
 * with read_end(l, *opened) whatever this returns. */
static es_err read_stream_row(sqlite_log *l, const char *type, const char *id, stream_row *row,
                              stream_entry **ent, int *opened, es_error_t *err) {
    int64_t tid;
    memset(row, 0, sizeof *row);
    *ent = NULL;
    es_err e = read_begin(l, opened, err);
    if (e == ES_OK)
        e = find_stream(l, type, id, 0, row, &tid, ent, err);
    return e;
}

static es_err lg_stream_version(es_log_t *base, const char *type, const char *id, uint64_t *version,
                                es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    stream_row row;
    stream_entry *ent;
    int opened;
    es_err e = read_stream_row(l, type, id, &row, &ent, &opened, err);
    read_end(l, opened);
    *version = e == ES_OK ? row.version : 0;
    return e;
}

/* Finds (creating) a stream for a write; the write transaction must be open. */
static es_err write_stream_row(sqlite_log *l, const char *type, const char *id, const char *what,
                               stream_row *row, int64_t *tid, stream_entry **ent, es_error_t *err) {
    if (!l->writing)
        return es_fail(err, ES_ESTATE, "%s outside a write transaction", what);
    return find_stream(l, type, id, 1, row, tid, ent, err);
}

static es_err read_end_offset(sqlite_log *l, int64_t *end, es_error_t *err) {
    sqlite3_stmt *s = stmt(l, S_END);
    int rc = sqlite3_step(s);
    *end = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return rc == SQLITE_ROW ? ES_OK : sql_fail(l, rc, "reading the log end", err);
}

/* Room in the queue for n more events. The transaction's first append learns the next
 * position: we hold the write lock, so nobody else can take it. */
static es_err reserve_queue(sqlite_log *l, const es_log_record_t *recs, size_t n, es_error_t *err) {
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += recs[i].len;
    if (reserve_items(&l->queued, &l->cap_queued, l->n_queued + n, sizeof *l->queued) ||
        es_buf_reserve(&l->queued_bytes, bytes) != ES_OK)
        return es_fail(err, ES_ENOMEM, "out of memory queueing %zu events", n);
    return l->next_pos ? ES_OK : read_end_offset(l, &l->next_pos, err);
}

static es_err lg_append(es_log_t *base, const char *type, const char *id, uint64_t expect_base,
                        const es_log_record_t *recs, size_t n, int64_t *offsets, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    stream_row row;
    stream_entry *ent;
    int64_t tid;
    es_err e = write_stream_row(l, type, id, "append", &row, &tid, &ent, err);
    if (e != ES_OK)
        return e;
    if (row.version != expect_base)
        return es_fail(err, ES_ECONFLICT, "%s/%s is at version %llu, expected %llu", type, id,
                       (unsigned long long)row.version, (unsigned long long)expect_base);
    if ((e = mark_dirty(l, ent, err)) != ES_OK)
        return e;
    ent->head_dirty = 1;
    if ((e = reserve_queue(l, recs, n, err)) != ES_OK)
        return e;
    int64_t prev = row.head;
    if (!l->tx_first)
        l->tx_first = l->next_pos;
    for (size_t i = 0; i < n; i++) {
        queued_event *q = &l->queued[l->n_queued++];
        *q = (queued_event){l->next_pos++, row.id, (int64_t)(expect_base + i + 1),
                            prev,          tid,    l->queued_bytes.len,
                            recs[i].len};
        memcpy(l->queued_bytes.data + q->off, recs[i].bytes, recs[i].len);
        l->queued_bytes.len += recs[i].len;
        prev = offsets[i] = q->pos;
    }
    ent->row.version = expect_base + n;
    ent->row.head = prev;
    l->tx_end = prev;
    return ES_OK;
}

static es_err lg_seed_stream(es_log_t *base, const char *type, const char *id, uint64_t version,
                             es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    stream_row row;
    stream_entry *ent;
    int64_t tid;
    es_err e = write_stream_row(l, type, id, "seeding a stream", &row, &tid, &ent, err);
    if (e != ES_OK)
        return e;
    if (row.version || row.head)
        return es_fail(err, ES_ECONFLICT, "%s/%s exists (at version %llu): not seeded at %llu",
                       type, id, (unsigned long long)row.version, (unsigned long long)version);
    if ((e = mark_dirty(l, ent, err)) != ES_OK)
        return e;
    ent->head_dirty = 1;
    ent->row.version = version; /* head stays 0: the chain starts with the next append */
    l->flush_now = 1;           /* no event of the log says so: es_heads must */
    return ES_OK;
}

static void lg_snapshot_source(es_log_t *base, es_snapshot_src *src, void *opaque) {
    sqlite_log *l = (sqlite_log *)base;
    l->snap_src = src;
    l->snap_src_opaque = opaque;
}

static void lg_write_heads(es_log_t *base) {
    ((sqlite_log *)base)->flush_now = 1;
}

static es_err decode_row(sqlite_log *l, sqlite3_stmt *s, int col, const char *type, const char *key,
                         int64_t pos, es_event_t **ev, es_error_t *err) {
    char topic[ES_MAX_TYPE_LEN + 16];
    snprintf(topic, sizeof topic, "%s.events", type);
    int len = sqlite3_column_bytes(s, col);
    es_raw_record_t raw = {topic, 0, pos, key, sqlite3_column_blob(s, col), (size_t)len, NULL, 0};
    es_err rc = ES_OK;
    /* The read pipeline's decode and upcast stages only: a linked stream holds neither a stale
     * version nor a gap (a broken link is ES_EIO before this). */
    es_read_current(l->base.cfg, &raw, ev, &rc, err);
    return rc;
}

/* Positions of the stream's events with from <= version <= to, oldest first. */
static es_err stream_positions(sqlite_log *l, const stream_row *row, uint64_t from, uint64_t to,
                               int64_t **out, size_t *n, es_error_t *err) {
    *out = NULL;
    *n = 0;
    if (row->version < from || (to && to < from))
        return ES_OK;
    es_err e = flush_queue(l, err);
    if (e != ES_OK)
        return e;
    uint64_t hi = to && to < row->version ? to : row->version;
    size_t count = (size_t)(hi - from + 1);
    int64_t *pos = malloc(count * sizeof *pos), p = row->head;
    if (!pos)
        return es_fail(err, ES_ENOMEM, "out of memory reading a stream of %zu events", count);
    uint64_t v = row->version;
    for (; v >= from && p; v--) {
        sqlite3_stmt *s = stmt(l, S_EVENT_LINK);
        sqlite3_bind_int64(s, 1, p);
        int rc = sqlite3_step(s);
        uint64_t got = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(s, 0) : 0;
        int64_t prev = rc == SQLITE_ROW ? sqlite3_column_int64(s, 1) : 0;
        sqlite3_reset(s);
        if (rc != SQLITE_ROW || got != v) {
            free(pos);
            if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return sql_fail(l, rc, "reading a stream", err);
            return es_fail(err, ES_EIO,
                           "stream link broken at position %lld (expected version "
                           "%llu); the file %s was modified outside eskit",
                           (long long)p, (unsigned long long)v, l->path);
        }
        if (v <= hi)
            pos[v - from] = p;
        p = prev;
    }
    if (v >= from) { /* the chain began past from: a stream seeded at a snapshot (seed_stream) */
        free(pos);
        return es_fail(err, ES_EIO,
                       "this store holds the stream's events from version %llu on only, and "
                       "version %llu was asked: the stream was restored from a snapshot at "
                       "version %llu (its earlier events are in the Kafka topic; delete the "
                       "state store to restore it whole), or %s was modified outside eskit",
                       (unsigned long long)v + 1, (unsigned long long)from, (unsigned long long)v,
                       l->path);
    }
    *out = pos;
    *n = count;
    return ES_OK;
}

static es_err lg_read_stream(es_log_t *base, const char *type, const char *id, uint64_t from,
                             uint64_t to, es_event_cb *cb, void *opaque, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    stream_row row;
    stream_entry *ent;
    int64_t *pos = NULL;
    size_t n = 0;
    int opened;
    es_err e = read_stream_row(l, type, id, &row, &ent, &opened, err);
    if (e == ES_OK)
        e = stream_positions(l, &row, from ? from : 1, to, &pos, &n, err);
    if (e == ES_EIO && row.id)
        es_error_prefix(err, "%s/%s: ", type, id);
    for (size_t i = 0; e == ES_OK && i < n; i++) {
        sqlite3_stmt *s = stmt(l, S_EVENT_GET);
        sqlite3_bind_int64(s, 1, pos[i]);
        int rc = sqlite3_step(s);
        es_event_t *ev = NULL;
        if (rc != SQLITE_ROW)
            e = sql_fail(l, rc, "reading an event", err);
        else
            e = decode_row(l, s, 0, type, id, pos[i], &ev, err);
        sqlite3_reset(s);
        if (e == ES_OK) {
            int stop = cb(ev, opaque);
            es_event_free(ev);
            if (stop)
                break;
        }
    }
    free(pos);
    read_end(l, opened);
    return e;
}

/* Type ids of the filter; an id of -1 stands for a type the log has never seen. */
static es_err filter_ids(sqlite_log *l, const char *const *types, int64_t **ids, size_t *n,
                         es_error_t *err) {
    *ids = NULL;
    *n = 0;
    if (!types)
        return ES_OK;
    size_t count = 0;
    while (types[count])
        count++;
    *ids = calloc(count + 1, sizeof **ids);
    if (!*ids)
        return es_fail(err, ES_ENOMEM, "out of memory");
    for (size_t i = 0; i < count; i++) {
        int64_t id = 0;
        es_err e = type_id(l, types[i], 0, &id, err);
        if (e != ES_OK)
            return e;
        (*ids)[i] = id ? id : -1;
    }
    *n = count;
    return ES_OK;
}

static int wanted(const int64_t *ids, size_t n, int64_t id, int all) {
    if (all)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static es_err lg_read_log(es_log_t *base, const char *const *types, int64_t from, size_t max,
                          es_event_cb *cb, void *opaque, int64_t *next, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    int64_t *ids = NULL, pos = from;
    size_t n_ids = 0, delivered = 0;
    int opened, rc = SQLITE_DONE;
    es_err e = read_begin(l, &opened, err);
    if (e == ES_OK)
        e = flush_queue(l, err);
    if (e == ES_OK)
        e = filter_ids(l, types, &ids, &n_ids, err);
    sqlite3_stmt *s = e == ES_OK ? stmt(l, S_LOG_READ) : NULL;
    if (s)
        sqlite3_bind_int64(s, 1, from);
    while (e == ES_OK && (max == 0 || delivered < max) && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        pos = sqlite3_column_int64(s, 0);
        int64_t tid = sqlite3_column_int64(s, 1);
        if (!wanted(ids, n_ids, tid, types == NULL)) {
            pos++;
            continue;
        }
        char tname[ES_MAX_TYPE_LEN + 1];
        es_event_t *ev = NULL;
        e = type_name(l, tid, tname, sizeof tname, err);
        if (e == ES_OK)
            e = decode_row(l, s, 2, tname, NULL, pos, &ev, err);
        if (e != ES_OK)
            break;
        int stop = cb(ev, opaque);
        es_event_free(ev);
        pos++;
        delivered++;
        if (stop)
            break;
    }
    if (e == ES_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        e = sql_fail(l, rc, "reading the log", err);
    if (s)
        sqlite3_reset(s);
    free(ids);
    read_end(l, opened);
    if (next)
        *next = pos;
    return e;
}

static es_err lg_end_offset(es_log_t *base, int64_t *end, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    if (l->next_pos) {
        *end = l->next_pos;
        return ES_OK;
    }
    return read_end_offset(l, end, err);
}

static size_t snapshot_size(const char *type, size_t len) {
    return sizeof(es_snapshot_t) + len + strlen(type) + 2;
}

/* Lays a snapshot out in the block at snap (snapshot_size bytes). */
static es_snapshot_t *snapshot_fill(es_snapshot_t *snap, uint64_t version, const char *type,
                                    const void *state, size_t len, int64_t taken_at) {
    uint8_t *st = (uint8_t *)(snap + 1);
    char *stype = (char *)st + len + 1;
    if (len)
        memcpy(st, state, len);
    memcpy(stype, type, strlen(type) + 1);
    *snap = (es_snapshot_t){version, stype, st, len, taken_at};
    return snap;
}

/* A snapshot in one allocation, so es_snapshot_free is free(). */
static es_snapshot_t *snapshot_copy(uint64_t version, const char *type, const void *state,
                                    size_t len, int64_t taken_at) {
    es_snapshot_t *snap = malloc(snapshot_size(type, len));
    return snap ? snapshot_fill(snap, version, type, state, len, taken_at) : NULL;
}

static es_err select_snapshot(sqlite_log *l, const stream_row *row, es_snapshot_t **out,
                              es_error_t *err) {
    sqlite3_stmt *s = stmt(l, S_SNAP_GET);
    sqlite3_bind_int64(s, 1, row->id);
    int rc = sqlite3_step(s);
    es_err e = ES_OK;
    if (rc == SQLITE_DONE)
        e = ES_ENOTFOUND;
    else if (rc != SQLITE_ROW)
        e = sql_fail(l, rc, "reading a snapshot", err);
    else if (!(*out =
                   snapshot_copy((uint64_t)sqlite3_column_int64(s, 0),
                                 (const char *)sqlite3_column_text(s, 1), sqlite3_column_blob(s, 2),
                                 (size_t)sqlite3_column_bytes(s, 2), sqlite3_column_int64(s, 3))))
        e = es_fail(err, ES_ENOMEM, "out of memory reading a snapshot");
    sqlite3_reset(s);
    return e;
}

static es_err lg_get_snapshot(es_log_t *base, const char *type, const char *id, es_snapshot_t **out,
                              es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    stream_row row;
    stream_entry *ent;
    int opened;
    *out = NULL;
    es_err e = read_stream_row(l, type, id, &row, &ent, &opened, err);
    /* Newest first: the writer's kept back, this transaction's, then one deferred
     * (tail_heads), then es_heads'. */
    const es_snapshot_t *p =
        e == ES_OK && row.id && l->snap_src ? l->snap_src(l->snap_src_opaque, type, id) : NULL;
    if (p && p->version < row.version) /* kept back, and another writer moved the stream on */
        p = NULL;
    if (!p) {
        const tail_head *h = e == ES_OK && row.id ? tail_find(&l->tail, row.id) : NULL;
        p = ent && ent->snap_dirty ? ent->snap : h && h->has_snap ? h->snap : NULL;
    }
    if (e == ES_OK && p &&
        !(*out = snapshot_copy(p->version, p->state_type, p->state, p->state_len, p->taken_at_us)))
        e = es_fail(err, ES_ENOMEM, "out of memory reading a snapshot");
    else if (e == ES_OK && !p)
        e = row.id ? select_snapshot(l, &row, out, err) : ES_ENOTFOUND;
    if (e == ES_ENOTFOUND)
        es_fail(err, ES_ENOTFOUND, "no snapshot of %s/%s", type, id);
    read_end(l, opened);
    return e;
}

/* Kept in the stream's cache entry; written once at commit. */
static es_err lg_put_snapshot(es_log_t *base, const char *type, const char *id,
                              const es_snapshot_t *snap, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    stream_row row;
    stream_entry *ent;
    int64_t tid;
    int64_t state_tid;
    es_err e = write_stream_row(l, type, id, "snapshot written", &row, &tid, &ent, err);
    if (e == ES_OK)
        e = type_id(l, snap->state_type, 1, &state_tid, err);
    if (e != ES_OK)
        return e;
    /* Into the block the stream's last snapshot used when it fits: a batch snapshots every
     * aggregate it changed (snapshot.every=1), and they are mostly the size they were. */
    size_t need = snapshot_size(snap->state_type, snap->state_len);
    es_snapshot_t *block = ent->snap;
    if (need > ent->snap_cap && !(block = malloc(need)))
        return es_fail(err, ES_ENOMEM, "out of memory keeping a snapshot");
    if ((e = mark_dirty(l, ent, err)) != ES_OK) {
        if (block != ent->snap)
            free(block);
        return e;
    }
    if (block != ent->snap) {
        free(ent->snap);
        ent->snap_cap = need;
    }
    ent->snap = snapshot_fill(block, snap->version, snap->state_type, snap->state, snap->state_len,
                              snap->taken_at_us);
    ent->snap_type_id = state_tid;
    ent->snap_dirty = 1;
    return ES_OK;
}

static char *keep(char **slot, const unsigned char *text) {
    free(*slot);
    *slot = text ? strdup((const char *)text) : NULL;
    return *slot;
}

static es_err read_command(sqlite_log *l, int64_t seq, const char *command_id, int64_t oldest,
                           es_command_record_t *rec, es_error_t *err);

static es_err lg_find_command(es_log_t *base, const char *command_id, es_command_record_t *rec,
                              es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    if (l->flags & ES_LOG_READONLY)
        return refuse_readonly(l, "looking up a command id", err);
    size_t at =
        l->n_cmds ? (size_t)(uintptr_t)es_lru_get(l->cmd_index, command_id, strlen(command_id)) : 0;
    if (at) {
        const queued_command *q = &l->cmds[at - 1];
        memset(rec, 0, sizeof *rec);
        rec->command_id = command_id;
        rec->outcome = q->outcome;
        rec->first_version = q->first_version;
        rec->last_version = q->last_version;
        rec->version = q->version;
        rec->reason =
            keep(&l->cmd_reason,
                 q->reason >= 0 ? (const unsigned char *)cmd_str(l, (size_t)q->reason) : NULL);
        rec->aggregate_type = keep(&l->cmd_type, (const unsigned char *)cmd_str(l, q->type));
        rec->aggregate_id = keep(&l->cmd_agg, (const unsigned char *)cmd_str(l, q->agg));
        if ((rec->has_fingerprint = q->has_fingerprint))
            es_fingerprint_get(q->fingerprint, &rec->fingerprint);
        return rec->aggregate_type && rec->aggregate_id
                   ? ES_OK
                   : es_fail(err, ES_ENOMEM, "out of memory reading a command record");
    }
    /* Outside a write transaction another connection may have written since: catch up. */
    id_window *w = &l->win;
    es_err e = w->built && l->writing && !w->stale ? ES_OK : ids_catch_up(l, err);
    uint32_t h = es_id_index_hash(&w->ids, command_id);
    int64_t oldest = w->ms ? es_now_us() / 1000 - w->ms : INT64_MIN, seq;
    size_t pos = SIZE_MAX;
    while (e == ES_OK && (seq = es_id_index_next(&w->ids, h, &pos)) != 0) {
        if (seq < w->low || (w->count && seq <= w->seen - w->count))
            continue; /* pruned, or past the count bound */
        e = read_command(l, seq, command_id, oldest, rec, err);
        if (e == ES_ENOTFOUND)
            e = ES_OK; /* a collision, pruned meanwhile, or the id's expired first use */
        else if (e == ES_OK)
            return ES_OK;
    }
    return e == ES_OK ? ES_ENOTFOUND : e;
}

/* The row seq when it holds command_id, first run at oldest or later. */
static es_err read_command(sqlite_log *l, int64_t seq, const char *command_id, int64_t oldest,
                           es_command_record_t *rec, es_error_t *err) {
    sqlite3_stmt *s = stmt(l, S_CMD_GET);
    sqlite3_bind_int64(s, 1, seq);
    int rc = sqlite3_step(s);
    es_err e = ES_OK;
    const char *id = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 8) : NULL;
    if (rc == SQLITE_ROW && id && !strcmp(id, command_id) && sqlite3_column_int64(s, 9) >= oldest) {
        memset(rec, 0, sizeof *rec);
        rec->command_id = command_id;
        rec->outcome = sqlite3_column_int(s, 0);
        rec->first_version = (uint64_t)sqlite3_column_int64(s, 1);
        rec->last_version = (uint64_t)sqlite3_column_int64(s, 2);
        rec->version = (uint64_t)sqlite3_column_int64(s, 3);
        rec->reason = keep(&l->cmd_reason, sqlite3_column_text(s, 4));
        rec->aggregate_type = keep(&l->cmd_type, sqlite3_column_text(s, 5));
        rec->aggregate_id = keep(&l->cmd_agg, sqlite3_column_text(s, 6));
        /* Another length is not ours: unchecked, like a row without one. */
        const uint8_t *fp = sqlite3_column_blob(s, 7);
        if ((rec->has_fingerprint = fp && sqlite3_column_bytes(s, 7) == ES_FINGERPRINT_LEN))
            es_fingerprint_get(fp, &rec->fingerprint);
        if (!rec->aggregate_type || !rec->aggregate_id)
            e = es_fail(err, ES_ENOMEM, "out of memory reading a command record");
    } else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
        e = ES_ENOTFOUND;
    } else {
        e = sql_fail(l, rc, "looking up a command id", err);
    }
    sqlite3_reset(s);
    return e;
}

/* Copies s with its NUL into cmd_bytes; *off: where. */
static int keep_cmd_str(sqlite_log *l, const char *s, size_t *off) {
    return es_buf_append(&l->cmd_bytes, s, strlen(s) + 1, off) == ES_OK ? 0 : -1;
}

/* Inside a write transaction: the record waits for the commit, findable by its id. */
static es_err queue_command(sqlite_log *l, const es_command_record_t *rec, int64_t tid,
                            es_error_t *err) {
    if (reserve_items(&l->cmds, &l->cap_cmds, l->n_cmds + 1, sizeof *l->cmds))
        return es_fail(err, ES_ENOMEM, "out of memory recording a command id");
    queued_command *q = &l->cmds[l->n_cmds];
    *q = (queued_command){.reason = -1,
                          .type_id = tid,
                          .outcome = rec->outcome,
                          .first_version = rec->first_version,
                          .last_version = rec->last_version,
                          .version = rec->version,
                          .has_fingerprint = rec->has_fingerprint,
                          .hash = es_id_index_hash(&l->win.ids, rec->command_id),
                          .at = rec->at_ms ? rec->at_ms : es_now_us() / 1000};
    if (rec->has_fingerprint)
        es_fingerprint_put(&rec->fingerprint, q->fingerprint);
    size_t reason = 0;
    if (keep_cmd_str(l, rec->command_id, &q->id) ||
        keep_cmd_str(l, rec->aggregate_type, &q->type) ||
        keep_cmd_str(l, rec->aggregate_id, &q->agg) ||
        (rec->reason && keep_cmd_str(l, rec->reason, &reason)) ||
        es_lru_put(l->cmd_index, rec->command_id, strlen(rec->command_id),
                   (void *)(uintptr_t)(l->n_cmds + 1)) != 0)
        return es_fail(err, ES_ENOMEM, "out of memory recording a command id");
    if (rec->reason)
        q->reason = (ptrdiff_t)reason;
    l->n_cmds++;
    return ES_OK;
}

static es_err lg_put_command(es_log_t *base, const es_command_record_t *rec, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    int64_t tid;
    if ((l->flags & ES_LOG_READONLY) && !l->writing)
        return refuse_readonly(l, "recording a command id", err);
    es_err e = type_id(l, rec->aggregate_type, 1, &tid, err);
    if (e != ES_OK)
        return e;
    if (l->writing)
        return queue_command(l, rec, tid, err);
    sqlite3_stmt *s = stmt(l, S_CMD_PUT);
    sqlite3_bind_text(s, 1, rec->command_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, tid);
    sqlite3_bind_text(s, 3, rec->aggregate_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, rec->outcome);
    sqlite3_bind_int64(s, 5, (int64_t)rec->first_version);
    sqlite3_bind_int64(s, 6, (int64_t)rec->last_version);
    sqlite3_bind_int64(s, 7, (int64_t)rec->version);
    if (rec->reason)
        sqlite3_bind_text(s, 8, rec->reason, -1, SQLITE_STATIC);
    uint8_t fp[ES_FINGERPRINT_LEN];
    if (rec->has_fingerprint) {
        es_fingerprint_put(&rec->fingerprint, fp);
        sqlite3_bind_blob(s, 9, fp, sizeof fp, SQLITE_STATIC);
    }
    sqlite3_bind_int64(s, 10, rec->at_ms ? rec->at_ms : es_now_us() / 1000);
    l->win.stale = 1; /* the index reads it with the next lookup */
    return step_done(l, s, "recording a command id", err);
}

static void multi_finalize(multi_stmt *m) {
    es_sql_finalize_all(m->st, N_ROW_SIZES);
}

/* A clean close leaves es_heads whole, so the next open reads no tail. Best effort: a file
 * left with heads_from is as correct, its next open just scans the tail. */
static void flush_at_close(sqlite_log *l) {
    es_error_t err = {0};
    if ((l->flags & ES_LOG_READONLY) || !l->tail.mine || !l->st[S_HEADS_FROM_CLEAR] ||
        !l->put_snaps.st[0])
        return;
    sqlite3_busy_timeout(l->db, 200); /* a close does not wait out another writer's batch */
    if (lg_begin(&l->base, &err) != ES_OK)
        return;
    l->flush_now = 1;
    lg_commit(&l->base, &err); /* rolls back when it fails */
}

static void lg_destroy(es_log_t *base) {
    sqlite_log *l = (sqlite_log *)base;
    if (!l)
        return;
    lg_rollback(base);
    flush_at_close(l);
    tail_clear(&l->tail);
    free(l->tail.slots);
    es_lru_destroy(l->streams);
    free(l->dirty);
    free(l->order);
    es_sql_finalize_all(l->st, S_COUNT);
    es_sql_tx_finalize(&l->tx);
    multi_finalize(&l->put_events);
    multi_finalize(&l->put_heads);
    multi_finalize(&l->put_snaps);
    multi_finalize(&l->put_streams);
    multi_finalize(&l->put_commands);
    free(l->cmds);
    es_buf_free(&l->cmd_bytes);
    es_lru_destroy(l->cmd_index);
    es_id_index_free(&l->win.ids);
    free(l->win.pend);
    free(l->new_streams);
    free(l->queued);
    es_buf_free(&l->queued_bytes);
    sqlite3_close(l->db);
    if (l->head)
        munmap(l->head, sizeof *l->head);
    drop_type_cache(l);
    free(l->types);
    free(l->cmd_reason);
    free(l->record_key);
    free(l->cmd_type);
    free(l->cmd_agg);
    free(l->path);
    free(l);
}

static es_err lg_identity(es_log_t *base, char *out, size_t cap, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    sqlite3_stmt *s = NULL;
    int rc =
        sqlite3_prepare_v2(l->db, "SELECT value FROM es_meta WHERE key = 'log_id'", -1, &s, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    if (rc == SQLITE_ROW)
        return ES_OK;
    return rc == SQLITE_DONE
               ? es_fail(err, ES_EIO, "%s has no log_id; it was not made by eskit", l->path)
               : sql_fail(l, rc, "reading the log's identity", err);
}

/* es_meta as a small key/value table for the Kafka command processor's state store: its
 * offsets and restore horizons, a few times a batch, so the statements are prepared once
 * (preparing them each call was 1.7% of the processor's instructions). */
static es_err lg_get_meta(es_log_t *base, const char *key, char *out, size_t cap, int *found,
                          es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    sqlite3_stmt *s = stmt(l, S_META_GET);
    *found = 0;
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(s, 0));
        *found = 1;
    }
    sqlite3_reset(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? ES_OK : sql_fail(l, rc, "reading es_meta", err);
}

static es_err lg_put_meta(es_log_t *base, const char *key, const char *value, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    if (l->flags & ES_LOG_READONLY)
        return refuse_readonly(l, "writing es_meta", err);
    sqlite3_stmt *s = stmt(l, S_META_PUT);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
    return step_done(l, s, "writing es_meta", err);
}

static es_err lg_partitions(es_log_t *base, const char *topic, int32_t *n, es_error_t *err) {
    (void)base;
    (void)topic;
    (void)err;
    *n = 1;
    return ES_OK;
}

/* The type id behind "<type>.events"; 0 when the log has never seen the type. */
static es_err topic_type_id(sqlite_log *l, const char *topic, int64_t *id, es_error_t *err) {
    size_t n = strlen(topic);
    char type[ES_MAX_TYPE_LEN + 1];
    if (n <= 7 || strcmp(topic + n - 7, ".events") || n - 7 > ES_MAX_TYPE_LEN)
        return es_fail(err, ES_EINVAL, "'%s' is not an event topic ('<aggregate type>.events')",
                       topic);
    memcpy(type, topic, n - 7);
    type[n - 7] = '\0';
    return type_id(l, type, 0, id, err);
}

typedef struct fetch_state {
    es_topic_pos_t *pos;
    int64_t *ids;
    size_t n;
} fetch_state;

static int fetch_target(const fetch_state *f, int64_t tid, int64_t at) {
    for (size_t i = 0; i < f->n; i++)
        if (f->ids[i] == tid && at >= f->pos[i].offset)
            return (int)i;
    return -1;
}

/* One global log: every topic's partition 0 shares the offset space, so one scan from the
 * lowest position serves all, and everything scanned is behind every position. */
static es_err lg_fetch(es_log_t *base, es_topic_pos_t *pos, size_t n_pos, size_t max, es_raw_cb *cb,
                       void *opaque, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    fetch_state f = {pos, calloc(n_pos ? n_pos : 1, sizeof(int64_t)), n_pos};
    int64_t start = INT64_MAX, scanned;
    size_t delivered = 0;
    int opened = 0, rc = SQLITE_DONE;
    es_err e = f.ids ? read_begin(l, &opened, err) : es_fail(err, ES_ENOMEM, "out of memory");
    for (size_t i = 0; e == ES_OK && i < n_pos; i++) {
        e = topic_type_id(l, pos[i].topic, &f.ids[i], err);
        if (pos[i].offset < start)
            start = pos[i].offset;
    }
    if (e != ES_OK || n_pos == 0) {
        read_end(l, opened);
        free(f.ids);
        return e;
    }
    scanned = start;
    sqlite3_stmt *s = stmt(l, S_FETCH);
    sqlite3_bind_int64(s, 1, start);
    while (delivered < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t at = sqlite3_column_int64(s, 0);
        int i = fetch_target(&f, sqlite3_column_int64(s, 1), at);
        scanned = at + 1;
        if (i < 0)
            continue;
        es_raw_record_t rec = {pos[i].topic,
                               0,
                               at,
                               NULL,
                               sqlite3_column_blob(s, 3),
                               (size_t)sqlite3_column_bytes(s, 3),
                               base,
                               sqlite3_column_int64(s, 2)};
        delivered++;
        if (cb(&rec, opaque))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        e = sql_fail(l, rc, "reading the log", err);
    sqlite3_reset(s);
    read_end(l, opened);
    for (size_t i = 0; e == ES_OK && i < n_pos; i++)
        if (pos[i].offset < scanned)
            pos[i].offset = scanned;
    free(f.ids);
    return e;
}

/* The aggregate id of stream ref, for a record lg_fetch delivered: read only when asked. */
static const char *lg_record_key(es_log_t *base, int64_t ref) {
    sqlite_log *l = (sqlite_log *)base;
    sqlite3_stmt *s = stmt(l, S_STREAM_KEY);
    sqlite3_bind_int64(s, 1, ref);
    int rc = sqlite3_step(s);
    const char *key = rc == SQLITE_ROW ? keep(&l->record_key, sqlite3_column_text(s, 0)) : NULL;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        es_logf(l->base.cfg, ES_LOG_WARNING, "reading a record's key from %s: %s", l->path,
                sqlite3_errmsg(l->db));
    sqlite3_reset(s);
    return key;
}

static int lg_has_records(es_log_t *base, const es_topic_pos_t *pos, size_t n) {
    int64_t end = 0;
    if (lg_end_offset(base, &end, NULL) != ES_OK)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (pos[i].offset < end)
            return 1;
    return 0;
}

/* What lg_topic_end and lg_topic_estimate start with: a read transaction (*opened), the topic's
 * type id (0: no event of it yet) and the log's end. */
static es_err topic_open(sqlite_log *l, const char *topic, int32_t partition, int64_t *tid,
                         int64_t *end, uint64_t *count, int *opened, es_error_t *err) {
    *tid = 0;
    *end = 0;
    *count = 0;
    if (partition != 0)
        return es_fail(err, ES_ENOTFOUND, "%s has no partition %d on the embedded backend", topic,
                       (int)partition);
    es_err e = read_begin(l, opened, err);
    if (e == ES_OK)
        e = topic_type_id(l, topic, tid, err);
    if (e == ES_OK)
        e = lg_end_offset(&l->base, end, err);
    return e;
}

/* The records of type tid from position from on, counted row by row. */
static es_err topic_count(sqlite_log *l, int64_t tid, int64_t from, uint64_t *count,
                          es_error_t *err) {
    sqlite3_stmt *s = stmt(l, S_TOPIC_COUNT);
    sqlite3_bind_int64(s, 1, from);
    sqlite3_bind_int64(s, 2, tid);
    int rc = sqlite3_step(s);
    es_err e = ES_OK;
    if (rc == SQLITE_ROW)
        *count = (uint64_t)sqlite3_column_int64(s, 0);
    else
        e = sql_fail(l, rc, "counting a topic's records", err);
    sqlite3_reset(s);
    return e;
}

static es_err lg_topic_end(es_log_t *base, const char *topic, int32_t partition, int64_t from,
                           int64_t *end, uint64_t *count, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    int64_t tid;
    int opened = 0;
    es_err e = topic_open(l, topic, partition, &tid, end, count, &opened, err);
    if (e == ES_OK && tid)
        e = topic_count(l, tid, from, count, err);
    read_end(l, opened);
    return e;
}

/* Counting a topic's records past a position reads every row after it (no index has the type
 * first): 0.2-0.5 s at 1.4M rows. Positions are dense (one INTEGER PRIMARY KEY per file, no
 * row ever deleted), so a span with no other type in the log holds end - from records, and one
 * shared with other types is sampled: ESTIMATE_SAMPLES positions spread over it, one seek each
 * (a standard error of at most 1.6% of the span). Spans up to ESTIMATE_ABOVE are counted. */
#define ESTIMATE_ABOVE 65536
#define ESTIMATE_SAMPLES 1024

static es_err lg_topic_estimate(es_log_t *base, const char *topic, int32_t partition, int64_t from,
                                int64_t *end, uint64_t *count, int *exact, es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    int64_t tid, first = from > 1 ? from : 1;
    int opened = 0;
    *exact = 1;
    es_err e = topic_open(l, topic, partition, &tid, end, count, &opened, err);
    int64_t span = *end - first;
    if (e == ES_OK && tid && span <= ESTIMATE_ABOVE) {
        e = topic_count(l, tid, from, count, err);
    } else if (e == ES_OK && tid) {
        sqlite3_stmt *s = stmt(l, S_OTHER_TYPES);
        sqlite3_bind_int64(s, 1, tid);
        int rc = sqlite3_step(s), others = rc == SQLITE_ROW && sqlite3_column_int(s, 0);
        if (rc != SQLITE_ROW)
            e = sql_fail(l, rc, "looking for other types in the log", err);
        *exact = 0;
        *count = (uint64_t)span;
        if (e == ES_OK && others) {
            s = stmt(l, S_TOPIC_SAMPLE);
            sqlite3_bind_int64(s, 1, first);
            sqlite3_bind_int64(s, 2, span);
            sqlite3_bind_int64(s, 3, ESTIMATE_SAMPLES);
            sqlite3_bind_int64(s, 4, tid);
            rc = sqlite3_step(s);
            if (rc == SQLITE_ROW)
                *count = (uint64_t)((sqlite3_column_int64(s, 0) * span + ESTIMATE_SAMPLES / 2) /
                                    ESTIMATE_SAMPLES);
            else
                e = sql_fail(l, rc, "sampling a topic's records", err);
        }
    }
    read_end(l, opened);
    return e;
}

/* The file is local: its end is always known. */
static int lg_cached_end(es_log_t *base, const char *topic, int32_t partition, int64_t from,
                         int64_t *end, uint64_t *count) {
    return lg_topic_end(base, topic, partition, from, end, count, NULL) == ES_OK;
}

static es_err lg_put_dlq(es_log_t *base, const char *dlq_topic, const char *ref, const char *key,
                         const uint8_t *value, size_t len, const es_kv_t *headers, size_t n_headers,
                         es_error_t *err) {
    sqlite_log *l = (sqlite_log *)base;
    es_buf_t h = {0};
    if (l->flags & ES_LOG_READONLY)
        return refuse_readonly(l, "writing a dead letter", err);
    for (size_t i = 0; i < n_headers; i++) {
        size_t need = strlen(headers[i].key) + strlen(headers[i].value) + 3;
        if (es_buf_reserve(&h, need + 1) != ES_OK) {
            es_buf_free(&h);
            return es_fail(err, ES_ENOMEM, "out of memory writing to %s", dlq_topic);
        }
        h.len += (size_t)snprintf((char *)h.data + h.len, need + 1, "%s: %s\n", headers[i].key,
                                  headers[i].value);
    }
    int own = !l->in_tx;
    es_err e = own ? es_sql_begin(&l->tx, ES_SQL_IMMEDIATE, "writing a dead letter", err) : ES_OK;
    if (e == ES_OK) {
        sqlite3_stmt *s = stmt(l, S_DLQ_PUT);
        sqlite3_bind_text(s, 1, dlq_topic, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, ref, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, key, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 4, value ? (const void *)value : "", (int)len, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, h.data ? (const char *)h.data : "", (int)h.len, SQLITE_STATIC);
        sqlite3_bind_int64(s, 6, es_now_us());
        e = step_done(l, s, "writing a dead letter", err);
    }
    if (own)
        e = es_sql_end(&l->tx, e, "writing a dead letter", err);
    es_buf_free(&h);
    return e;
}

static const es_store_ops sqlite_store = {
    .version = ES_STORE_OPS_VERSION,
    .begin = lg_begin,
    .commit = lg_commit,
    .rollback = lg_rollback,
    .append = lg_append,
    .end_offset = lg_end_offset,
    .get_snapshot = lg_get_snapshot,
    .put_snapshot = lg_put_snapshot,
    .find_command = lg_find_command,
    .put_command = lg_put_command,
    .get_meta = lg_get_meta,
    .put_meta = lg_put_meta,
    .seed_stream = lg_seed_stream,
    .write_heads = lg_write_heads,
    .heads_due = lg_heads_due,
    .snapshot_source = lg_snapshot_source,
};

static const es_reader_ops sqlite_reader = {
    .version = ES_READER_OPS_VERSION,
    .stream_version = lg_stream_version,
    .read_stream = lg_read_stream,
    .read_log = lg_read_log,
    .identity = lg_identity,
    .partitions = lg_partitions,
    .fetch = lg_fetch,
    .has_records = lg_has_records,
    .topic_end = lg_topic_end,
    .cached_end = lg_cached_end,
    .topic_estimate = lg_topic_estimate,
    .put_dlq = lg_put_dlq,
    .commit_positions = NULL, /* nothing else tracks positions of a file */
    .record_key = lg_record_key,
};

static es_err exec_sql(sqlite_log *l, const char *sql, const char *what, es_error_t *err) {
    return es_sql_exec(l->db, l->path, sql, what, err);
}

static int journal_cb(void *opaque, int n, char **values, char **names) {
    (void)names;
    if (n > 0 && values[0])
        snprintf(opaque, 16, "%s", values[0]);
    return 0;
}

/* Switching to WAL needs a moment of exclusive access and SQLite reports SQLITE_BUSY at once,
 * without its busy handler, when another process is opening the same file: retry until the
 * busy timeout. */
static es_err switch_to_wal(sqlite_log *l, es_error_t *err) {
    long long budget_ms = es_config_get_int(l->base.cfg, "sqlite.busy.timeout.ms");
    char mode[16] = "";
    int rc;
    for (long long waited = 0;; waited += 2) {
        rc = sqlite3_exec(l->db, "PRAGMA journal_mode=WAL", journal_cb, mode, NULL);
        if ((rc & 0xff) != SQLITE_BUSY || waited >= budget_ms)
            break;
        sqlite3_sleep(2);
    }
    if (rc != SQLITE_OK)
        return sql_fail(l, rc, "switching to WAL", err);
    if (strcmp(mode, "wal"))
        return es_fail(err, ES_EIO,
                       "%s cannot use write-ahead logging (journal mode stayed '%s'); put the "
                       "database on a local file system",
                       l->path, mode);
    return ES_OK;
}

/* The schema version the file holds; 0 for a file without our schema. A file whose es_meta
 * cannot be read is an error, not a file to create the schema in. */
static es_err stored_schema_version(sqlite_log *l, int *v, es_error_t *err) {
    sqlite3_stmt *s = NULL;
    *v = 0;
    int rc = sqlite3_prepare_v2(
        l->db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'es_meta'", -1,
        &s, NULL);
    int has_meta =
        rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW && sqlite3_column_int(s, 0) > 0;
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW)
        return sql_fail(l, rc, "reading the schema", err);
    if (!has_meta)
        return ES_OK;
    rc = sqlite3_prepare_v2(l->db, "SELECT value FROM es_meta WHERE key = 'schema_version'", -1, &s,
                            NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
        *v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE
               ? ES_OK
               : sql_fail(l, rc, "reading the schema version", err);
}

static es_err check_schema_version(sqlite_log *l, es_error_t *err) {
    int v = 0;
    es_err e = stored_schema_version(l, &v, err);
    if (e == ES_OK && v > SCHEMA_VERSION)
        return es_fail(err, ES_EIO,
                       "%s has eskit schema version %d, newer than this eskit understands (%d); "
                       "upgrade eskit",
                       l->path, v, SCHEMA_VERSION);
    if (e == ES_OK && v < READ_SCHEMA_MIN && (l->flags & ES_LOG_READONLY))
        return es_fail(err, ES_ESTATE,
                       "%s has eskit schema version %d, older than this eskit reads (%d); open it "
                       "once with a writer (es_store_new) to upgrade it",
                       l->path, v, READ_SCHEMA_MIN);
    return e;
}

/* Creates the schema, or brings an older one up to date; another process may have done
 * either while we waited for the lock. */
static es_err create_schema(sqlite_log *l, es_error_t *err) {
    es_sql_tx tx = es_sql_tx_on(l->db, l->path);
    es_err e = es_sql_begin(&tx, ES_SQL_IMMEDIATE, "creating the schema", err);
    if (e != ES_OK)
        return e;
    int v = 0;
    e = stored_schema_version(l, &v, err);
    /* A read model or saga database is never also made an event store. */
    es_db_kind kind = ES_DB_EMPTY;
    if (e == ES_OK && v == 0 && (e = es_db_probe(l->db, l->path, &kind, err)) == ES_OK &&
        (kind == ES_DB_READ_MODEL || kind == ES_DB_SAGA_DB))
        e = es_db_expect(l->db, l->path, ES_DB_EVENT_STORE, err);
    if (e == ES_OK && v == 0)
        e = exec_sql(l, schema_sql, "creating the schema", err);
    if (e == ES_OK && v == 1)
        e = exec_sql(l, migrate_v1_sql, "upgrading the schema from version 1", err);
    if (e == ES_OK && (v == 1 || v == 2))
        e = exec_sql(l, migrate_v2_sql, "upgrading the schema from version 2", err);
    if (e == ES_OK && v >= 1 && v <= 3)
        e = exec_sql(l, migrate_v3_sql, "upgrading the schema from version 3", err);
    if (e == ES_OK && v >= 1 && v <= 4)
        e = exec_sql(l, migrate_v4_sql, "upgrading the schema from version 4", err);
    if (e == ES_OK && v >= 1 && v <= 5)
        e = exec_sql(l, migrate_v5_sql, "upgrading the schema from version 5", err);
    /* The log's identity, so a read model can tell which log it was built from. */
    char id[ES_UUID_STR_LEN + 1], sql[128];
    es_uuid7(id);
    snprintf(sql, sizeof sql, "INSERT OR IGNORE INTO es_meta(key, value) VALUES ('log_id', '%s')",
             id);
    if (e == ES_OK)
        e = exec_sql(l, sql, "creating the schema", err);
    return es_sql_end(&tx, e, "creating the schema", err);
}

/* Prepares head + rows "(?, ...)" + tail for each of row_sizes. */
static es_err multi_prepare(sqlite_log *l, const char *head, int cols, const char *tail,
                            multi_stmt *m, es_error_t *err) {
    size_t hl = strlen(head), tl = strlen(tail), rl = 2 * (size_t)cols + 2;
    es_err e = ES_OK;
    for (size_t k = 0; e == ES_OK && k < N_ROW_SIZES; k++) {
        char *sql = malloc(hl + row_sizes[k] * rl + tl + 1), *p = sql;
        if (!sql)
            return es_fail(err, ES_ENOMEM, "out of memory preparing statements");
        memcpy(p, head, hl);
        p += hl;
        for (size_t r = 0; r < row_sizes[k]; r++) {
            *p++ = r ? ',' : ' ';
            *p++ = '(';
            for (int c = 0; c < cols; c++) {
                *p++ = c ? ',' : '?';
                if (c)
                    *p++ = '?';
            }
            *p++ = ')';
        }
        memcpy(p, tail, tl + 1);
        e = es_sql_prepare(l->db, l->path, sql, &m->st[k], err);
        free(sql);
    }
    return e;
}

/* The statements of every open; a read-only one skips the command records' (only writers look
 * commands up, and their columns are those of the newest schema). */
static es_err prepare_reads(sqlite_log *l, es_error_t *err) {
    const char *text[S_COUNT];
    memcpy(text, sql_text, sizeof text);
    if (l->flags & ES_LOG_READONLY)
        text[S_CMD_GET] = text[S_CMD_PUT] = text[S_CMD_SINCE] = text[S_CMD_EDGE] =
            text[S_CMD_PRUNE] = text[S_HEADS_FROM_CLEAR] = text[S_META_PUT] = NULL;
    l->tx = es_sql_tx_on(l->db, l->path);
    es_err e = es_sql_tx_prepare(&l->tx, err);
    return e == ES_OK ? es_sql_prepare_all(l->db, l->path, text, S_COUNT, l->st, err) : e;
}

/* The head file as read, before the log's end is: read the other way round, a commit between
 * the two reads would look like a loss. */
typedef struct head_view {
    int present, valid;
    char log_id[LOG_ID_CAP];
    int64_t end;
} head_view;

static void view_head(const head_page *p, head_view *v) {
    v->present = 1;
    v->valid = !memcmp(p->magic, HEAD_MAGIC, sizeof HEAD_MAGIC) &&
               memchr(p->log_id, '\0', sizeof p->log_id) != NULL;
    memcpy(v->log_id, p->log_id, sizeof v->log_id);
    v->log_id[sizeof v->log_id - 1] = '\0';
    v->end = __atomic_load_n(&p->end, __ATOMIC_ACQUIRE);
}

/* "<db><suffix>"; caller frees. */
static char *side_path(const char *db, const char *suffix) {
    size_t n = strlen(db) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s", db, suffix);
    return p;
}

#define HEAD_WHAT "log's head file"

/* Opens <db>-head through the one opener of side files (sidefile.c): it may be ours or the
 * database owner's (root running esctl on a service's store), and one root makes is given to
 * that owner. ES_ENOTFOUND when it does not exist (read-only); ES_EIO when it cannot be opened
 * (we may not write it), ES_EINVAL when it is refused. *path (caller frees) names it. */
static es_err open_head(const sqlite_log *l, unsigned flags, char **path, int *fd,
                        es_error_t *err) {
    struct stat st;
    *fd = -1;
    if (!(*path = side_path(l->path, "-head")))
        return es_fail(err, ES_ENOMEM, "out of memory");
    if (stat(l->path, &st) != 0)
        return es_fail(err, ES_EIO, "cannot examine %s: %s", l->path, strerror(errno));
    return es_side_file_open_for(*path, HEAD_WHAT, flags, st.st_uid, st.st_gid, fd, err);
}

/* Read-only and immutable (no -wal when it opened, so no lock): a writer came since it opened,
 * and what it reads may miss the writer's commits that the head file already records. */
static int disturbed(const sqlite_log *l) {
    es_db_stamp now;
    if (!(l->flags & ES_LOG_READONLY) || !es_db_immutable(l->db))
        return 0;
    es_db_stamp_take(l->path, &now);
    return !es_db_stamp_same(&l->stamp, &now);
}

/* Reads our end and compares it with the recorded one; a log ending below it lost events,
 * unless it was read while a writer came (ES_ERETRY, l->changed). */
static es_err check_end(sqlite_log *l, const head_view *v, es_error_t *err) {
    int64_t next = 0;
    es_error_t why = {0};
    es_err e = lg_identity(&l->base, l->log_id, sizeof l->log_id, err);
    if (e == ES_OK && read_end_offset(l, &next, &why) != ES_OK) {
        if (!(l->flags & ES_LOG_NO_END_CHECK))
            return es_fail(err, why.code, "%s", why.message);
        /* verify reports the damage that kept the end from being read */
        snprintf(l->head_why, sizeof l->head_why, "the log's end cannot be read: %.450s",
                 why.message);
        l->opened_end = -1;
        return ES_OK;
    }
    if (e != ES_OK)
        return e;
    l->opened_end = next - 1;
    l->recorded_end = -1;
    if (v->present && !v->valid)
        snprintf(l->head_why, sizeof l->head_why, "it is not an eskit head file");
    else if (v->present && strcmp(v->log_id, l->log_id))
        snprintf(l->head_why, sizeof l->head_why, "it belongs to another log (log id %.40s)",
                 v->log_id);
    else if (v->present)
        l->recorded_end = v->end;
    if (l->recorded_end <= l->opened_end || (l->flags & ES_LOG_NO_END_CHECK))
        return ES_OK;
    if ((l->changed = disturbed(l)))
        return es_fail(err, ES_ERETRY,
                       "%s changed while it was read (a writer opened it: %s-head records position "
                       "%lld, the file read ended at %lld); run it again",
                       l->path, l->path, (long long)l->recorded_end, (long long)l->opened_end);
    return es_fail(err, ES_EIO,
                   "%s: the log ends at position %lld, but %s-head records position %lld as "
                   "committed: %lld acknowledged event(s) are gone (a damaged or cut -wal file, or "
                   "an older copy of the database); restore the database and its -wal from a "
                   "backup, or accept the loss with 'esctl --db <file> verify --accept-end'",
                   l->path, (long long)l->opened_end, l->path, (long long)l->recorded_end,
                   (long long)(l->recorded_end - l->opened_end));
}

/* For logs that do not keep the head file: compares with it when there is one. */
static es_err check_head_file(sqlite_log *l, es_error_t *err) {
    head_view v = {0};
    char *path = NULL;
    int fd = -1;
    es_error_t why = {0};
    es_err e = open_head(l, ES_SIDE_READ, &path, &fd, &why);
    if (e == ES_OK) {
        head_page p;
        ssize_t n = pread(fd, &p, sizeof p, 0);
        if (n == (ssize_t)sizeof p)
            view_head(&p, &v);
        else
            v.present = 1; /* short: not a head file */
        close(fd);
    } else if (e == ES_ENOTFOUND) {
        e = ES_OK;
    } else if (path && (l->flags & ES_LOG_NO_END_CHECK)) {
        snprintf(l->head_why, sizeof l->head_why, "%.500s", why.message);
        e = ES_OK;
    }
    free(path);
    return e == ES_OK ? check_end(l, &v, err) : es_fail(err, e, "%s", why.message);
}

/* Maps <db>-head for commits to raise, under an exclusive flock while it is checked (and made
 * for this log when new or another log's). */
static es_err attach_head(sqlite_log *l, es_error_t *err) {
    char *path = NULL;
    int fd = -1;
    void *map = MAP_FAILED;
    es_error_t why = {0};
    es_err e = open_head(l, 0, &path, &fd, &why);
    if (e == ES_EIO && path) { /* not ours to write (a group sharing the store): compare only */
        es_logf(l->base.cfg, ES_LOG_WARNING, "%s; commits here do not raise the end it records",
                why.message);
        free(path);
        return check_head_file(l, err);
    }
    if (e != ES_OK)
        es_fail(err, e, "%s", why.message);
    if (e == ES_OK && flock(fd, LOCK_EX) != 0)
        e = es_fail(err, ES_EIO, "cannot lock %s: %s", path, strerror(errno));
    if (e == ES_OK)
        e = es_side_file_reserve(fd, path, HEAD_WHAT, sizeof(head_page), err);
    if (e == ES_OK && (map = mmap(NULL, sizeof(head_page), PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                                  0)) == MAP_FAILED)
        e = es_fail(err, ES_EIO, "cannot map %s: %s", path, strerror(errno));
    head_view v = {0};
    if (e == ES_OK) {
        view_head(map, &v);
        e = check_end(l, &v, err);
    }
    if (e == ES_OK && l->recorded_end < 0) { /* new, or left by another log */
        head_page *h = map;
        memset(h, 0, sizeof *h);
        memcpy(h->magic, HEAD_MAGIC, sizeof HEAD_MAGIC);
        snprintf(h->log_id, sizeof h->log_id, "%s", l->log_id);
        __atomic_store_n(&h->end, l->opened_end, __ATOMIC_RELEASE);
        l->recorded_end = l->opened_end;
        l->head_why[0] = '\0';
    }
    if (e == ES_OK)
        l->head = map;
    else if (map != MAP_FAILED)
        munmap(map, sizeof(head_page));
    if (fd >= 0) {
        flock(fd, LOCK_UN); /* the mapping keeps the open file, and a lock on it, alive */
        close(fd);
    }
    free(path);
    return e;
}

/* Commits keep the head file when they are durable when they return. */
static int keeps_head(const sqlite_log *l) {
    const char *sync = es_config_get(l->base.cfg, "sqlite.synchronous");
    return !strcmp(sync, "full") || !strcmp(sync, "extra");
}

static es_err setup(sqlite_log *l, es_error_t *err) {
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA synchronous=%s",
             es_config_get(l->base.cfg, "sqlite.synchronous"));
    int v = 0;
    es_err e = switch_to_wal(l, err);
    if (e == ES_OK)
        e = exec_sql(l, pragma, "setting synchronous", err);
    /* Only a file without our schema needs the write lock: SQLite's lock is not fair, and
     * a busy writer elsewhere would starve every open that asked for it. */
    if (e == ES_OK)
        e = stored_schema_version(l, &v, err);
    if (e == ES_OK && v < SCHEMA_VERSION)
        e = create_schema(l, err);
    if (e == ES_OK)
        e = check_schema_version(l, err);
    if (e == ES_OK)
        e = prepare_reads(l, err);
    if (e == ES_OK)
        e = multi_prepare(l, put_events_sql, EVENT_COLS, "", &l->put_events, err);
    if (e == ES_OK)
        e = multi_prepare(l, put_heads_sql, HEAD_COLS, put_heads_tail, &l->put_heads, err);
    if (e == ES_OK)
        e = multi_prepare(l, put_snaps_sql, SNAP_COLS, "", &l->put_snaps, err);
    if (e == ES_OK)
        e = multi_prepare(l, put_streams_sql, STREAM_COLS, "", &l->put_streams, err);
    if (e == ES_OK)
        e = multi_prepare(l, put_commands_sql, COMMAND_COLS, "", &l->put_commands, err);
    if (e == ES_OK)
        e = keeps_head(l) ? attach_head(l, err) : check_head_file(l, err);
    return e;
}

/* Inspection: no pragma (journal_mode and synchronous would write), no schema, no head file
 * kept; the file must be an event store of our schema version. */
static es_err setup_readonly(sqlite_log *l, es_error_t *err) {
    es_err e = es_db_expect(l->db, l->path, ES_DB_EVENT_STORE, err);
    if (e == ES_OK)
        e = check_schema_version(l, err);
    if (e == ES_OK)
        e = prepare_reads(l, err);
    if (e == ES_OK)
        e = check_head_file(l, err);
    return e;
}

/* What an inspection open made, undone for another try. */
static void close_readonly(sqlite_log *l) {
    es_sql_finalize_all(l->st, S_COUNT);
    es_sql_tx_finalize(&l->tx);
    drop_type_cache(l);
    sqlite3_close(l->db);
    l->db = NULL;
    l->recorded_end = -1;
    l->opened_end = 0;
    l->head_why[0] = '\0';
    l->changed = 0;
}

/* A writer that came while an immutable open read the file makes the head check fail (its
 * commits are in a -wal this open does not read), or a read fail (it checkpointed under it):
 * the second open sees its -wal, or the file it checkpointed into, and reads what it
 * committed. */
static es_err open_readonly(sqlite_log *l, int busy_ms, es_error_t *err) {
    for (int attempt = 1;; attempt++) {
        es_db_stamp_take(l->path, &l->stamp);
        es_err e = es_db_open_readonly(l->path, "event store", busy_ms, &l->db, err);
        if (e == ES_OK)
            e = setup_readonly(l, err);
        if (e == ES_OK || !(l->changed || disturbed(l)))
            return e;
        if (attempt == 2) {
            if (!l->changed)
                es_error_prefix(err,
                                "%s changed while it was read (a writer opened it), so this may "
                                "be no damage; run it again: ",
                                l->path);
            return e;
        }
        close_readonly(l);
    }
}

static es_err open_db(sqlite_log *l, es_error_t *err) {
    const es_config_t *cfg = l->base.cfg;
    int busy_ms = (int)es_config_get_int(cfg, "sqlite.busy.timeout.ms");
    if (l->flags & ES_LOG_READONLY)
        return open_readonly(l, busy_ms, err);
    int rc = sqlite3_open_v2(
        l->path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(l, rc, "opening the event store", err);
    sqlite3_extended_result_codes(l->db, 1);
    sqlite3_busy_timeout(l->db, busy_ms);
    /* HEADS_GUARD is for writers that do not know deferred heads; ours would run it for every
     * row a flush writes (a sub-program a row: 8% more instructions a command at 10,000 streams).
     */
    sqlite3_db_config(l->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, (int *)NULL);
    return setup(l, err);
}

es_err es_log_sqlite_open_flags(const es_config_t *cfg, unsigned flags, es_log_t **out,
                                es_error_t *err) {
    const char *path = es_config_get(cfg, "db");
    sqlite_log *l = calloc(1, sizeof *l);
    *out = NULL;
    if (!l || !(l->path = strdup(path))) {
        free(l);
        return es_fail(err, ES_ENOMEM, "out of memory opening %s", path);
    }
    l->base.store = &sqlite_store;
    l->base.reader = &sqlite_reader;
    l->base.destroy = lg_destroy;
    l->base.cfg = cfg;
    l->data_version = -1;
    l->flags = flags;
    l->recorded_end = -1;
    l->win.ms = es_config_get_int(cfg, "idempotency.window.ms");
    if (l->win.ms > (1LL << 50)) /* some 35,000 years: "at + ms" cannot overflow */
        l->win.ms = 1LL << 50;
    l->win.count = es_config_get_int(cfg, "idempotency.window.ids");
    l->win.ids.seed = es_random64() | 1;
    l->tail.max = es_config_get_int(cfg, "sqlite.heads.defer.events");
    l->streams =
        es_lru_new((size_t)es_config_get_int(cfg, "cache.aggregates"), free_entry, entry_pinned);
    l->cmd_index = l->streams ? es_lru_new(ES_LRU_UNBOUNDED, NULL, NULL) : NULL;
    if (!l->cmd_index) {
        es_lru_destroy(l->streams);
        free(l->path);
        free(l);
        return es_fail(err, ES_ENOMEM, "out of memory opening %s", path);
    }
    es_err e = open_db(l, err);
    if (e != ES_OK) {
        lg_destroy(&l->base);
        return e;
    }
    *out = &l->base;
    return ES_OK;
}

sqlite3 *es_log_sqlite_db(es_log_t *log) {
    return ((sqlite_log *)log)->db;
}

void es_log_sqlite_end(es_log_t *log, int64_t *recorded, int64_t *found, const char **why) {
    const sqlite_log *l = (const sqlite_log *)log;
    *recorded = l->recorded_end;
    *found = l->opened_end;
    *why = l->head_why[0] ? l->head_why : NULL;
}

int es_log_sqlite_disturbed(es_log_t *log) {
    return disturbed((const sqlite_log *)log);
}

es_err es_log_sqlite_accept_end(const es_config_t *cfg, int64_t *before, int64_t *after,
                                es_error_t *err) {
    es_log_t *log = NULL;
    es_err e = es_log_sqlite_open_flags(cfg, ES_LOG_READONLY | ES_LOG_NO_END_CHECK, &log, err);
    if (e != ES_OK)
        return e;
    sqlite_log *l = (sqlite_log *)log;
    char *path = NULL;
    int fd = -1;
    /* An end read wrong would become the head file's: only one read whole is written. */
    if (l->opened_end < 0)
        e = es_fail(err, ES_EIO,
                    "cannot accept the end of %s (nothing was written to its head "
                    "file): %s",
                    l->path, l->head_why);
    else if (disturbed(l))
        e = es_fail(err, ES_ERETRY,
                    "cannot accept the end of %s: a writer opened it while its end was read; "
                    "nothing was written; run it again",
                    l->path);
    if (e == ES_OK)
        e = open_head(l, 0, &path, &fd, err);
    if (e == ES_OK && flock(fd, LOCK_EX) != 0)
        e = es_fail(err, ES_EIO, "cannot lock %s: %s", path, strerror(errno));
    if (e == ES_OK)
        e = es_side_file_reserve(fd, path, HEAD_WHAT, sizeof(head_page), err);
    head_page p = {0};
    memcpy(p.magic, HEAD_MAGIC, sizeof HEAD_MAGIC);
    snprintf(p.log_id, sizeof p.log_id, "%s", l->log_id);
    p.end = l->opened_end;
    if (e == ES_OK && pwrite(fd, &p, sizeof p, 0) != (ssize_t)sizeof p)
        e = es_fail(err, ES_EIO, "cannot write %s: %s", path, strerror(errno));
    if (e == ES_OK && fsync(fd) != 0)
        e = es_fail(err, ES_EIO, "cannot write %s: %s", path, strerror(errno));
    if (before)
        *before = l->recorded_end;
    if (after)
        *after = l->opened_end;
    if (fd >= 0)
        close(fd);
    free(path);
    lg_destroy(log);
    return e;
}
