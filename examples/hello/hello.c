/*
 * hello: a bank account as an eskit aggregate, and a read model of balances.
 *
 * The account is a decider over the messages of hello.proto: a decide per
 * command turns it into events or rejects it (no overdraft), an evolve per event
 * folds it into the state. A projector keeps a table of balances up to date from the events.
 * On the embedded backend: hello.db is the log, hello-read.db the read model.
 * Each command has an id of its own, so running hello again appends nothing.
 *
 * Build against an installed eskit, with CMake (CMakeLists.txt) or by hand:
 *   protoc-c --c_out=. hello.proto
 *   cc -std=c11 -o hello hello.c hello.pb-c.c $(pkg-config --cflags --libs eskit)
 */
#include <stdint.h>
#include <stdio.h>

#include <eskit/eskit.h>

#include "hello.pb-c.h"

/* What an event does to the balance, in cents: evolve and the projector both use it. */
static int64_t change(const ProtobufCMessage *event) {
    if (event->descriptor == &hello__v1__deposited__descriptor)
        return ((const Hello__V1__Deposited *)event)->amount_cents;
    if (event->descriptor == &hello__v1__withdrawn__descriptor)
        return -((const Hello__V1__Withdrawn *)event)->amount_cents;
    return 0;
}

/* The write side: one decide per command type, one evolve per event type. ES_DECIDE and
 * ES_EVOLVE give each typed state and message pointers. */
ES_DECIDE(open_account, Hello__V1__Account, Hello__V1__OpenAccount) {
    Hello__V1__AccountOpened opened = HELLO__V1__ACCOUNT_OPENED__INIT;
    return state->open ? es_reject(d, "the account is already open") : es_emit(d, &opened.base);
}

ES_DECIDE(deposit, Hello__V1__Account, Hello__V1__Deposit) {
    Hello__V1__Deposited deposited = HELLO__V1__DEPOSITED__INIT;
    deposited.amount_cents = command->amount_cents;
    if (!state->open)
        return es_reject(d, "the account is not open; open it first");
    if (deposited.amount_cents <= 0)
        return es_reject(d, "a deposit must be more than 0");
    if (deposited.amount_cents > INT64_MAX - state->balance_cents)
        return es_reject(d, "the balance would overflow");
    return es_emit(d, &deposited.base);
}

ES_DECIDE(withdraw, Hello__V1__Account, Hello__V1__Withdraw) {
    Hello__V1__Withdrawn withdrawn = HELLO__V1__WITHDRAWN__INIT;
    withdrawn.amount_cents = command->amount_cents;
    if (!state->open)
        return es_reject(d, "the account is not open; open it first");
    if (withdrawn.amount_cents <= 0)
        return es_reject(d, "a withdrawal must be more than 0");
    if (withdrawn.amount_cents > state->balance_cents)
        return es_reject(d, "no overdraft: the balance is %lld cents",
                         (long long)state->balance_cents);
    return es_emit(d, &withdrawn.base);
}

ES_EVOLVE(opened, Hello__V1__Account, Hello__V1__AccountOpened) {
    state->open = 1;
    return ES_OK;
}

ES_EVOLVE(moved, Hello__V1__Account, ProtobufCMessage) { /* Deposited or Withdrawn */
    state->balance_cents += change(event);
    return ES_OK;
}

static const es_command_handler_t commands[] = {
    {&hello__v1__open_account__descriptor, open_account},
    {&hello__v1__deposit__descriptor, deposit},
    {&hello__v1__withdraw__descriptor, withdraw},
    {NULL, NULL}};
static const es_evolver_t events[] = {{&hello__v1__account_opened__descriptor, opened},
                                      {&hello__v1__deposited__descriptor, moved},
                                      {&hello__v1__withdrawn__descriptor, moved},
                                      {NULL, NULL}};
static const es_aggregate_def account_type = {.abi_version = ES_AGGREGATE_ABI,
                                              .type = "hello.account",
                                              .state = &hello__v1__account__descriptor,
                                              .command_handlers = commands,
                                              .evolvers = events};

/* The read side: a table of balances, created by migrate, kept by apply. */
static es_err migrate(sqlite3 *db, int from_version, es_error_t *err) {
    static const char schema_v1[] = "CREATE TABLE balances (account TEXT PRIMARY KEY, "
                                    "balance_cents INTEGER NOT NULL, version INTEGER NOT NULL)";
    if (from_version < 1 && sqlite3_exec(db, schema_v1, NULL, NULL, NULL) != SQLITE_OK)
        return es_fail(err, ES_EIO, "creating balances: %s", sqlite3_errmsg(db));
    return ES_OK;
}

/* The version guard makes an event applied twice change nothing. */
static es_err on_event(es_projector_ctx_t *ctx, const es_event_t *ev, const ProtobufCMessage *msg,
                       es_error_t *err) {
    sqlite3_stmt *s = es_ctx_stmt(ctx,
                                  "INSERT INTO balances VALUES (?1, ?2, ?3) ON CONFLICT (account) "
                                  "DO UPDATE SET balance_cents = balance_cents + ?2, version = ?3 "
                                  "WHERE version < ?3",
                                  err);
    if (!s)
        return err->code;
    if (sqlite3_bind_text(s, 1, ev->aggregate_id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, change(msg)) != SQLITE_OK ||
        sqlite3_bind_int64(s, 3, (sqlite3_int64)ev->version) != SQLITE_OK)
        return es_fail(err, ES_ENOMEM, "binding %s of %s", ev->event_type, ev->aggregate_id);
    return es_ctx_exec(ctx, s, err);
}

static es_err apply(es_projector_ctx_t *ctx, const es_event_t *ev, es_error_t *err) {
    static const es_event_handler_t handlers[] = {
        {&hello__v1__account_opened__descriptor, on_event},
        {&hello__v1__deposited__descriptor, on_event},
        {&hello__v1__withdrawn__descriptor, on_event}};
    return es_ctx_dispatch(ctx, ev, handlers, sizeof handlers / sizeof *handlers, err);
}

static const char *const topics[] = {"hello.account.events", NULL};
static const es_projector_def balances = {.abi_version = ES_PROJECTOR_ABI,
                                          .name = "balances",
                                          .schema_version = 1,
                                          .topics = topics,
                                          .migrate = migrate,
                                          .apply = apply};

/* Runs one command; a rejection is an answer to print, not a failure of the program. */
static es_err execute(es_engine_t *engine, const char *command_id, const char *account,
                      const ProtobufCMessage *message, es_error_t *err) {
    es_command_t cmd = {.aggregate_type = "hello.account",
                        .aggregate_id = account,
                        .message = message,
                        .command_id = command_id};
    es_result_t res = {0};
    es_err rc = es_execute(engine, &cmd, &res, err);
    printf("%s %-5s %-12s", command_id, account, message->descriptor->short_name);
    if (rc == ES_OK)
        printf("accepted, version %llu%s\n", (unsigned long long)res.version,
               res.duplicate ? " (done before: nothing appended)" : "");
    else if (rc == ES_EREJECTED)
        printf("rejected: %s\n", res.reason);
    else
        printf("failed\n");
    es_result_clear(&res);
    return rc == ES_EREJECTED ? ES_OK : rc;
}

static es_err run_commands(es_engine_t *engine, es_error_t *err) {
    Hello__V1__OpenAccount open = HELLO__V1__OPEN_ACCOUNT__INIT;
    Hello__V1__Deposit deposit = HELLO__V1__DEPOSIT__INIT;
    Hello__V1__Withdraw withdraw = HELLO__V1__WITHDRAW__INIT, overdraw = HELLO__V1__WITHDRAW__INIT;
    deposit.amount_cents = 10000;
    withdraw.amount_cents = 2550;
    overdraw.amount_cents = 20000;
    es_err rc = execute(engine, "cmd-1", "alice", &open.base, err);
    if (rc == ES_OK)
        rc = execute(engine, "cmd-2", "alice", &deposit.base, err);
    if (rc == ES_OK)
        rc = execute(engine, "cmd-3", "alice", &withdraw.base, err);
    if (rc == ES_OK)
        rc = execute(engine, "cmd-4", "bob", &deposit.base, err); /* bob has no account yet */
    if (rc == ES_OK)
        rc = execute(engine, "cmd-5", "bob", &open.base, err);
    if (rc == ES_OK)
        rc = execute(engine, "cmd-6", "bob", &deposit.base, err);
    if (rc == ES_OK)
        rc = execute(engine, "cmd-7", "bob", &overdraw.base, err);
    return rc;
}

static int print_row(void *opaque, int n, char **values, char **names) {
    (void)opaque, (void)n, (void)names;
    printf("  %-5s %s\n", values[0], values[1]);
    return 0;
}

/* Queries the read model on a connection of its own, as any reader of it would. */
static es_err print_balances(const char *path, es_error_t *err) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    printf("balances:\n");
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db,
                          "SELECT account, printf('%d.%02d', balance_cents / 100, "
                          "balance_cents % 100) FROM balances ORDER BY account",
                          print_row, NULL, NULL);
    es_err e = ES_OK;
    if (rc != SQLITE_OK)
        e = es_fail(err, ES_EIO, "reading %s: %s", path, sqlite3_errmsg(db));
    sqlite3_close(db);
    return e;
}

int main(void) {
    es_error_t err = {0};
    es_config_t *cfg = es_config_new();
    es_engine_t *engine = NULL;
    es_runner_t *runner = NULL;
    es_err rc = cfg ? ES_OK : es_fail(&err, ES_ENOMEM, "out of memory");
    if (rc == ES_OK)
        rc = es_config_set(cfg, "db", "hello.db", &err);
    if (rc == ES_OK)
        rc = es_config_set(cfg, "readmodel.db", "hello-read.db", &err);
    if (rc == ES_OK) /* an event the projector fails on stops it, instead of being parked */
        rc = es_config_set(cfg, "projector.on.error", "stop", &err);
    if (rc == ES_OK)
        rc = es_engine_new(cfg, &engine, &err);
    if (rc == ES_OK)
        rc = es_engine_register(engine, &account_type, NULL, &err);
    if (rc == ES_OK)
        rc = run_commands(engine, &err);
    if (rc == ES_OK)
        rc = es_runner_new(cfg, &balances, &runner, &err);
    if (rc == ES_OK) /* apply what the log holds now, waiting up to 10 s */
        rc = es_runner_catch_up(runner, 10000, &err);
    if (rc == ES_OK)
        rc = print_balances(es_config_get(cfg, "readmodel.db"), &err);
    if (rc != ES_OK)
        fprintf(stderr, "hello: %s (%s)\n", err.message, es_strerror(rc));
    es_runner_destroy(runner);
    es_engine_destroy(engine);
    es_config_destroy(cfg);
    return rc == ES_OK ? 0 : 1;
}
