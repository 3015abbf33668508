/*
 * fakehcs: stand-ins for computecore.dll, vmcompute.dll and the COM allocator, with the same C interface, so the
 * ctypes bindings of hcsshim.hcs.win32 can be tested on Linux.
 *
 * One source, built three ways (see tests/fakehcs/build.py):
 *   -DFAKE_COM          libfakecom.so: CoTaskMemAlloc/CoTaskMemFree, counting live allocations and bad frees.
 *   -DFAKE_COMPUTECORE  libfakecomputecore.so: the 60 computecore exports (HCS v2). Add -DFAKE_OLD_BUILD to leave
 *                       out the live-migration exports and HcsGetProcessorCompatibilityFromSavedState, like an
 *                       older Windows build.
 *   -DFAKE_VMCOMPUTE    libfakevmcompute.so: the 26 vmcompute compute-system/process exports (HCS v1).
 * Both DLL fakes link against libfakecom.so, so every returned string comes from one allocator, as on Windows.
 *
 * Each DLL fake records every call as a UTF-8 JSON object {"function": name, "args": {...}, "out": {...}}:
 * handles and integers as numbers, strings as JSON strings whose escapes are the exact UTF-16 units received,
 * NULL as null. It answers with canned results (fake_set_result: the HRESULT, the result document, the data
 * document; fake_queue_result: the same for the next call only) and hands out handles (kind << 40 | n) that do not fit in 32 bits. Registered callbacks are invoked
 * on demand (fake_fire_event, fake_fire_notification, fake_complete_operation), on the caller's thread or on a
 * new thread that is joined before returning.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))
typedef int32_t HRESULT;

EXPORT void *CoTaskMemAlloc(size_t size);
EXPORT void CoTaskMemFree(void *pointer);

/* ------------------------------------------------------------------ COM allocator (libfakecom.so) */
#ifdef FAKE_COM
#define MAX_LIVE 4096
static pthread_mutex_t com_lock = PTHREAD_MUTEX_INITIALIZER;
static void *live[MAX_LIVE];
static long live_count, total_count, bad_frees;

EXPORT void *CoTaskMemAlloc(size_t size) {
    void *p = malloc(size ? size : 1);
    pthread_mutex_lock(&com_lock);
    for (int i = 0; i < MAX_LIVE; i++) {
        if (!live[i]) { live[i] = p; live_count++; total_count++; break; }
    }
    pthread_mutex_unlock(&com_lock);
    return p;
}

EXPORT void CoTaskMemFree(void *pointer) {
    if (!pointer) return;
    int found = 0;
    pthread_mutex_lock(&com_lock);
    for (int i = 0; i < MAX_LIVE; i++) {
        if (live[i] == pointer) { live[i] = NULL; live_count--; found = 1; break; }
    }
    if (!found) bad_frees++;  /* a double free or a pointer we never gave out: counted, not freed */
    pthread_mutex_unlock(&com_lock);
    if (found) free(pointer);
}

EXPORT long fake_live_allocations(void) { return live_count; }
EXPORT long fake_total_allocations(void) { return total_count; }
EXPORT long fake_bad_frees(void) { return bad_frees; }
EXPORT void fake_com_reset_counters(void) { total_count = 0; bad_frees = 0; }
#endif

#if defined(FAKE_COMPUTECORE) || defined(FAKE_VMCOMPUTE)
/* ------------------------------------------------------------------ recording */
typedef struct { char *buf; size_t len, cap; int items; } sb_t;

static void sb_grow(sb_t *b, size_t extra) {
    if (b->len + extra + 1 > b->cap) {
        b->cap = (b->len + extra + 1) * 2;
        b->buf = realloc(b->buf, b->cap);
    }
}
static void sb_put(sb_t *b, const char *s) {
    size_t n = strlen(s);
    sb_grow(b, n);
    memcpy(b->buf + b->len, s, n + 1);
    b->len += n;
}
static void sb_key(sb_t *b, const char *key) {
    sb_put(b, b->items++ ? ", \"" : "\"");
    sb_put(b, key);
    sb_put(b, "\": ");
}
static void sb_u64(sb_t *b, const char *key, uint64_t v) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_key(b, key);
    sb_put(b, tmp);
}
static void sb_wstr(sb_t *b, const char *key, const uint16_t *s) {
    sb_key(b, key);
    if (!s) { sb_put(b, "null"); return; }
    sb_put(b, "\"");
    char tmp[8];
    for (; *s; s++) {
        if (*s < 0x20 || *s >= 0x7f || *s == '"' || *s == '\\') {
            snprintf(tmp, sizeof tmp, "\\u%04x", *s);
        } else {
            tmp[0] = (char)*s; tmp[1] = 0;
        }
        sb_put(b, tmp);
    }
    sb_put(b, "\"");
}

typedef struct { const char *name; sb_t args, out; } rec_t;
#define MAX_CALLS 1024
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *calls[MAX_CALLS];
static int ncalls;
static char *calls_json;

static void rec_begin(rec_t *r, const char *name) { memset(r, 0, sizeof *r); r->name = name; }
#define ARG_H(r, k, v) sb_u64(&(r)->args, k, (uint64_t)(uintptr_t)(v))
#define ARG_U(r, k, v) sb_u64(&(r)->args, k, (uint64_t)(v))
#define ARG_S(r, k, v) sb_wstr(&(r)->args, k, v)
#define OUT_H(r, k, v) sb_u64(&(r)->out, k, (uint64_t)(uintptr_t)(v))

static void rec_end(rec_t *r) {
    sb_t all = {0};
    sb_put(&all, "{\"function\": \"");
    sb_put(&all, r->name);
    sb_put(&all, "\", \"args\": {");
    if (r->args.buf) sb_put(&all, r->args.buf);
    sb_put(&all, "}, \"out\": {");
    if (r->out.buf) sb_put(&all, r->out.buf);
    sb_put(&all, "}}");
    free(r->args.buf);
    free(r->out.buf);
    pthread_mutex_lock(&lock);
    if (ncalls == MAX_CALLS) {
        free(calls[0]);
        memmove(calls, calls + 1, sizeof(calls[0]) * (MAX_CALLS - 1));
        ncalls--;
    }
    calls[ncalls++] = all.buf;
    pthread_mutex_unlock(&lock);
}

/* ------------------------------------------------------------------ canned results */
typedef struct { char name[64]; HRESULT hr; uint16_t *result, *output; } canned_t;
#define MAX_CANNED 128
static canned_t canned[MAX_CANNED];
static int ncanned;
static const canned_t none;
/* One-shot answers (fake_queue_result), used in order before the standing one of the same function. */
#define MAX_QUEUED 64
static canned_t queued[MAX_QUEUED];
static int nqueued;
static uint32_t info_pid;
static uintptr_t info_stdio[3];

static uint16_t *wdup(const uint16_t *s, uint16_t *(*alloc)(size_t)) {
    if (!s) return NULL;
    size_t n = 0;
    while (s[n]) n++;
    uint16_t *copy = alloc((n + 1) * sizeof(uint16_t));
    memcpy(copy, s, (n + 1) * sizeof(uint16_t));
    return copy;
}
static uint16_t *heap_alloc(size_t size) { return malloc(size); }
static uint16_t *com_alloc(size_t size) { return CoTaskMemAlloc(size); }

static const canned_t *find(const char *name) {
    for (int i = 0; i < ncanned; i++) if (!strcmp(canned[i].name, name)) return &canned[i];
    return &none;
}

/* The canned answer of `name`: write its documents (fresh CoTaskMemAlloc copies) and return its HRESULT. */
static HRESULT answer(const char *name, uint16_t **result, uint16_t **output) {
    pthread_mutex_lock(&lock);
    const canned_t *c = find(name);
    canned_t once = {0};
    for (int i = 0; i < nqueued; i++) {
        if (!strcmp(queued[i].name, name)) {
            once = queued[i];
            memmove(&queued[i], &queued[i + 1], sizeof(canned_t) * (nqueued - i - 1));
            nqueued--;
            c = &once;
            break;
        }
    }
    HRESULT hr = c->hr;
    if (result) *result = wdup(c->result, com_alloc);
    if (output) *output = wdup(c->output, com_alloc);
    free(once.result);
    free(once.output);
    pthread_mutex_unlock(&lock);
    return hr;
}

/* The next call of `name` answers this (then the standing answer again); queued answers are used in order. */
EXPORT void fake_queue_result(const char *name, HRESULT hr, const uint16_t *result, const uint16_t *output) {
    pthread_mutex_lock(&lock);
    if (nqueued < MAX_QUEUED) {
        canned_t *c = &queued[nqueued++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "%s", name);
        c->hr = hr;
        c->result = wdup(result, heap_alloc);
        c->output = wdup(output, heap_alloc);
    }
    pthread_mutex_unlock(&lock);
}

EXPORT void fake_set_result(const char *name, HRESULT hr, const uint16_t *result, const uint16_t *output) {
    pthread_mutex_lock(&lock);
    canned_t *c = (canned_t *)find(name);
    if (c == &none && ncanned < MAX_CANNED) {
        c = &canned[ncanned++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "%s", name);
    }
    if (c != &none) {
        free(c->result);
        free(c->output);
        c->hr = hr;
        c->result = wdup(result, heap_alloc);
        c->output = wdup(output, heap_alloc);
    }
    pthread_mutex_unlock(&lock);
}

EXPORT void fake_set_process_info(uint32_t pid, uintptr_t in, uintptr_t out, uintptr_t err) {
    info_pid = pid; info_stdio[0] = in; info_stdio[1] = out; info_stdio[2] = err;
}

typedef struct { uint32_t ProcessId, Reserved; uintptr_t StdInput, StdOutput, StdError; } process_info_t;
static void fill_info(process_info_t *info) {
    if (!info) return;
    info->ProcessId = info_pid; info->Reserved = 0;
    info->StdInput = info_stdio[0]; info->StdOutput = info_stdio[1]; info->StdError = info_stdio[2];
}

/* ------------------------------------------------------------------ handles and callback registrations */
enum { KIND_OPERATION = 1, KIND_SYSTEM = 2, KIND_PROCESS = 3, KIND_CALLBACK = 4 };
static uint64_t next_handle[5];
static void *new_handle(int kind) {
    pthread_mutex_lock(&lock);
    uint64_t n = ++next_handle[kind];
    pthread_mutex_unlock(&lock);
    return (void *)(uintptr_t)(((uint64_t)kind << 40) | n);
}

typedef struct { void *handle, *cbhandle, *callback, *context; uint32_t options; int active; } reg_t;
#define MAX_REGS 256
static reg_t regs[MAX_REGS];
static int nregs;

static void reg_set(void *handle, void *cbhandle, void *callback, void *context, uint32_t options) {
    pthread_mutex_lock(&lock);
    int i;
    for (i = 0; i < nregs; i++)  /* v2: one callback per handle, replaced; v1: one per callback handle */
        if (regs[i].active && (cbhandle ? regs[i].cbhandle == cbhandle : regs[i].handle == handle)) break;
    if (i == nregs && nregs < MAX_REGS) nregs++;
    if (i < MAX_REGS) {
        regs[i] = (reg_t){handle, cbhandle, callback, context, options, callback != NULL};
    }
    pthread_mutex_unlock(&lock);
}
static void reg_drop(void *handle, void *cbhandle) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nregs; i++)
        if (regs[i].active && (cbhandle ? regs[i].cbhandle == cbhandle : regs[i].handle == handle)) regs[i].active = 0;
    pthread_mutex_unlock(&lock);
}
static int reg_find(void *key, reg_t *out) {
    int found = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nregs; i++)
        if (regs[i].active && (regs[i].handle == key || regs[i].cbhandle == key)) { *out = regs[i]; found = 1; }
    pthread_mutex_unlock(&lock);
    return found;
}
EXPORT int fake_registration_count(void) {
    int n = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nregs; i++) n += regs[i].active;
    pthread_mutex_unlock(&lock);
    return n;
}

/* Run fn(arg) here or on a new thread, joined before returning. */
static void run(int threaded, void *(*fn)(void *), void *arg) {
    if (!threaded) { fn(arg); return; }
    pthread_t thread;
    pthread_create(&thread, NULL, fn, arg);
    pthread_join(thread, NULL);
}

EXPORT int fake_call_count(void) { return ncalls; }
EXPORT const char *fake_last_call(void) { return ncalls ? calls[ncalls - 1] : "null"; }
EXPORT const char *fake_calls(void) {
    pthread_mutex_lock(&lock);
    sb_t all = {0};
    sb_put(&all, "[");
    for (int i = 0; i < ncalls; i++) { if (i) sb_put(&all, ", "); sb_put(&all, calls[i]); }
    sb_put(&all, "]");
    free(calls_json);
    calls_json = all.buf;
    pthread_mutex_unlock(&lock);
    return calls_json;
}

/* Forget every call, canned result, registration and operation (handles keep counting up). */
static void reset_ops(void);
EXPORT void fake_reset(void) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < ncalls; i++) free(calls[i]);
    ncalls = 0;
    for (int i = 0; i < ncanned; i++) { free(canned[i].result); free(canned[i].output); }
    memset(canned, 0, sizeof canned);
    ncanned = 0;
    for (int i = 0; i < nqueued; i++) { free(queued[i].result); free(queued[i].output); }
    nqueued = 0;
    nregs = 0;
    info_pid = 0; memset(info_stdio, 0, sizeof info_stdio);
    pthread_mutex_unlock(&lock);
    reset_ops();
}
#endif

/* ================================================================== computecore.dll (HCS v2) */
#ifdef FAKE_COMPUTECORE
typedef struct { uint32_t Type; const uint16_t *EventData; void *Operation; } HCS_EVENT;
typedef void (*event_callback_t)(HCS_EVENT *event, void *context);
typedef void (*completion_t)(void *operation, void *context);

typedef struct { void *handle, *context, *callback, *system, *process; int with_events, closed; } op_t;
#define MAX_OPS 4096
static op_t ops[MAX_OPS];
static int nops;
static void reset_ops(void) { pthread_mutex_lock(&lock); nops = 0; pthread_mutex_unlock(&lock); }
static op_t *op_find(void *handle) {
    for (int i = 0; i < nops; i++) if (ops[i].handle == handle) return &ops[i];
    return NULL;
}
static void op_track(void *operation, void *system, void *process) {
    pthread_mutex_lock(&lock);
    op_t *op = op_find(operation);
    if (op && system) op->system = system;
    if (op && process) op->process = process;
    pthread_mutex_unlock(&lock);
}
EXPORT int fake_open_operations(void) {
    int n = 0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nops; i++) n += !ops[i].closed;
    pthread_mutex_unlock(&lock);
    return n;
}

static void *new_operation(rec_t *r, void *context, void *callback, int with_events) {
    HRESULT hr = answer(r->name, NULL, NULL);
    if (hr < 0) {
        rec_end(r);
        errno = (hr & 0x1fff0000) == 0x00070000 ? (hr & 0xffff) : hr;  /* the fake's GetLastError */
        return NULL;
    }
    void *handle = new_handle(KIND_OPERATION);
    pthread_mutex_lock(&lock);
    if (nops < MAX_OPS) ops[nops++] = (op_t){handle, context, callback, NULL, NULL, with_events, 0};
    pthread_mutex_unlock(&lock);
    OUT_H(r, "operation", handle);
    rec_end(r);
    return handle;
}

EXPORT void *HcsCreateOperation(void *context, void *callback) {
    rec_t r; rec_begin(&r, "HcsCreateOperation");
    ARG_H(&r, "context", context); ARG_H(&r, "callback", callback);
    return new_operation(&r, context, callback, 0);
}
EXPORT void *HcsCreateOperationWithNotifications(uint32_t eventTypes, void *context, void *callback) {
    rec_t r; rec_begin(&r, "HcsCreateOperationWithNotifications");
    ARG_U(&r, "eventTypes", eventTypes); ARG_H(&r, "context", context); ARG_H(&r, "callback", callback);
    return new_operation(&r, context, callback, 1);
}
EXPORT void HcsCloseOperation(void *operation) {
    rec_t r; rec_begin(&r, "HcsCloseOperation"); ARG_H(&r, "operation", operation);
    pthread_mutex_lock(&lock);
    op_t *op = op_find(operation);
    if (op) op->closed = 1;
    pthread_mutex_unlock(&lock);
    rec_end(&r);
}
EXPORT void *HcsGetOperationContext(void *operation) {
    rec_t r; rec_begin(&r, "HcsGetOperationContext"); ARG_H(&r, "operation", operation); rec_end(&r);
    pthread_mutex_lock(&lock);
    op_t *op = op_find(operation);
    void *context = op ? op->context : NULL;
    pthread_mutex_unlock(&lock);
    return context;
}
EXPORT HRESULT HcsSetOperationContext(void *operation, void *context) {
    rec_t r; rec_begin(&r, "HcsSetOperationContext"); ARG_H(&r, "operation", operation); ARG_H(&r, "context", context);
    pthread_mutex_lock(&lock);
    op_t *op = op_find(operation);
    if (op) op->context = context;
    pthread_mutex_unlock(&lock);
    rec_end(&r);
    return answer(r.name, NULL, NULL);
}
EXPORT void *HcsGetComputeSystemFromOperation(void *operation) {
    rec_t r; rec_begin(&r, "HcsGetComputeSystemFromOperation"); ARG_H(&r, "operation", operation); rec_end(&r);
    pthread_mutex_lock(&lock);
    op_t *op = op_find(operation);
    void *system = op ? op->system : NULL;
    pthread_mutex_unlock(&lock);
    return system;
}
EXPORT void *HcsGetProcessFromOperation(void *operation) {
    rec_t r; rec_begin(&r, "HcsGetProcessFromOperation"); ARG_H(&r, "operation", operation); rec_end(&r);
    pthread_mutex_lock(&lock);
    op_t *op = op_find(operation);
    void *process = op ? op->process : NULL;
    pthread_mutex_unlock(&lock);
    return process;
}
static int is_set(const char *name) {
    pthread_mutex_lock(&lock);
    int set = find(name) != &none;
    pthread_mutex_unlock(&lock);
    return set;
}
EXPORT int32_t HcsGetOperationType(void *operation) {
    rec_t r; rec_begin(&r, "HcsGetOperationType"); ARG_H(&r, "operation", operation); rec_end(&r);
    return is_set(r.name) ? answer(r.name, NULL, NULL) : -1;  /* canned "hresult" is the type */
}
EXPORT uint64_t HcsGetOperationId(void *operation) {
    rec_t r; rec_begin(&r, "HcsGetOperationId"); ARG_H(&r, "operation", operation); rec_end(&r);
    return (1ULL << 63) | ((uint64_t)(uintptr_t)operation & 0xffffffffffULL);
}
EXPORT HRESULT HcsGetOperationResult(void *operation, uint16_t **resultDocument) {
    rec_t r; rec_begin(&r, "HcsGetOperationResult"); ARG_H(&r, "operation", operation); rec_end(&r);
    return answer(r.name, resultDocument, NULL);
}
EXPORT HRESULT HcsGetOperationResultAndProcessInfo(void *operation, process_info_t *info, uint16_t **resultDocument) {
    rec_t r; rec_begin(&r, "HcsGetOperationResultAndProcessInfo"); ARG_H(&r, "operation", operation); rec_end(&r);
    fill_info(info);
    return answer(r.name, resultDocument, NULL);
}
EXPORT HRESULT HcsAddResourceToOperation(void *operation, uint32_t type, const uint16_t *uri, void *handle) {
    rec_t r; rec_begin(&r, "HcsAddResourceToOperation");
    ARG_H(&r, "operation", operation); ARG_U(&r, "resourceType", type); ARG_S(&r, "uri", uri);
    ARG_H(&r, "handle", handle); rec_end(&r);
    return answer(r.name, NULL, NULL);
}
#ifndef FAKE_OLD_BUILD
EXPORT HRESULT HcsGetProcessorCompatibilityFromSavedState(const uint16_t *runtimeFileName, uint16_t **features) {
    rec_t r; rec_begin(&r, "HcsGetProcessorCompatibilityFromSavedState");
    ARG_S(&r, "runtimeFileName", runtimeFileName); rec_end(&r);
    return answer(r.name, features, NULL);
}
#endif
EXPORT HRESULT HcsWaitForOperationResult(void *operation, uint32_t timeoutMs, uint16_t **resultDocument) {
    rec_t r; rec_begin(&r, "HcsWaitForOperationResult");
    ARG_H(&r, "operation", operation); ARG_U(&r, "timeoutMs", timeoutMs); rec_end(&r);
    return answer(r.name, resultDocument, NULL);
}
EXPORT HRESULT HcsWaitForOperationResultAndProcessInfo(void *operation, uint32_t timeoutMs, process_info_t *info,
                                                       uint16_t **resultDocument) {
    rec_t r; rec_begin(&r, "HcsWaitForOperationResultAndProcessInfo");
    ARG_H(&r, "operation", operation); ARG_U(&r, "timeoutMs", timeoutMs); rec_end(&r);
    fill_info(info);
    return answer(r.name, resultDocument, NULL);
}
EXPORT HRESULT HcsSetOperationCallback(void *operation, void *context, void *callback) {
    rec_t r; rec_begin(&r, "HcsSetOperationCallback");
    ARG_H(&r, "operation", operation); ARG_H(&r, "context", context); ARG_H(&r, "callback", callback);
    pthread_mutex_lock(&lock);
    op_t *op = op_find(operation);
    if (op) { op->context = context; op->callback = callback; op->with_events = 0; }
    pthread_mutex_unlock(&lock);
    rec_end(&r);
    return answer(r.name, NULL, NULL);
}
EXPORT HRESULT HcsCancelOperation(void *operation) {
    rec_t r; rec_begin(&r, "HcsCancelOperation"); ARG_H(&r, "operation", operation); rec_end(&r);
    return answer(r.name, NULL, NULL);
}
EXPORT HRESULT HcsGetOperationProperties(void *operation, const uint16_t *options, uint16_t **resultDocument) {
    rec_t r; rec_begin(&r, "HcsGetOperationProperties");
    ARG_H(&r, "operation", operation); ARG_S(&r, "options", options); rec_end(&r);
    return answer(r.name, resultDocument, NULL);
}

/* Compute systems */
EXPORT HRESULT HcsEnumerateComputeSystems(const uint16_t *query, void *operation) {
    rec_t r; rec_begin(&r, "HcsEnumerateComputeSystems");
    ARG_S(&r, "query", query); ARG_H(&r, "operation", operation); rec_end(&r);
    return answer(r.name, NULL, NULL);
}
EXPORT HRESULT HcsEnumerateComputeSystemsInNamespace(const uint16_t *ns, const uint16_t *query, void *operation) {
    rec_t r; rec_begin(&r, "HcsEnumerateComputeSystemsInNamespace");
    ARG_S(&r, "idNamespace", ns); ARG_S(&r, "query", query); ARG_H(&r, "operation", operation); rec_end(&r);
    return answer(r.name, NULL, NULL);
}
static HRESULT give_handle(rec_t *r, int kind, void **out, void *operation) {
    HRESULT hr = answer(r->name, NULL, NULL);
    void *handle = new_handle(kind);  /* handed out even on failure: the caller must close it */
    if (out) *out = handle;
    OUT_H(r, kind == KIND_SYSTEM ? "computeSystem" : "process", handle);
    rec_end(r);
    if (operation) op_track(operation, kind == KIND_SYSTEM ? handle : NULL, kind == KIND_PROCESS ? handle : NULL);
    return hr;
}
EXPORT HRESULT HcsCreateComputeSystem(const uint16_t *id, const uint16_t *configuration, void *operation,
                                      const void *securityDescriptor, void **computeSystem) {
    rec_t r; rec_begin(&r, "HcsCreateComputeSystem");
    ARG_S(&r, "id", id); ARG_S(&r, "configuration", configuration); ARG_H(&r, "operation", operation);
    ARG_H(&r, "securityDescriptor", securityDescriptor);
    return give_handle(&r, KIND_SYSTEM, computeSystem, operation);
}
EXPORT HRESULT HcsCreateComputeSystemInNamespace(const uint16_t *ns, const uint16_t *id,
                                                 const uint16_t *configuration, void *operation,
                                                 const void *options, void **computeSystem) {
    rec_t r; rec_begin(&r, "HcsCreateComputeSystemInNamespace");
    ARG_S(&r, "idNamespace", ns); ARG_S(&r, "id", id); ARG_S(&r, "configuration", configuration);
    ARG_H(&r, "operation", operation); ARG_H(&r, "options", options);
    return give_handle(&r, KIND_SYSTEM, computeSystem, operation);
}
EXPORT HRESULT HcsOpenComputeSystem(const uint16_t *id, uint32_t requestedAccess, void **computeSystem) {
    rec_t r; rec_begin(&r, "HcsOpenComputeSystem");
    ARG_S(&r, "id", id); ARG_U(&r, "requestedAccess", requestedAccess);
    return give_handle(&r, KIND_SYSTEM, computeSystem, NULL);
}
EXPORT HRESULT HcsOpenComputeSystemInNamespace(const uint16_t *ns, const uint16_t *id, uint32_t requestedAccess,
                                               void **computeSystem) {
    rec_t r; rec_begin(&r, "HcsOpenComputeSystemInNamespace");
    ARG_S(&r, "idNamespace", ns); ARG_S(&r, "id", id); ARG_U(&r, "requestedAccess", requestedAccess);
    return give_handle(&r, KIND_SYSTEM, computeSystem, NULL);
}
EXPORT void HcsCloseComputeSystem(void *computeSystem) {
    rec_t r; rec_begin(&r, "HcsCloseComputeSystem"); ARG_H(&r, "computeSystem", computeSystem); rec_end(&r);
    reg_drop(computeSystem, NULL);  /* no callback after close */
}

/* (handle, operation, options) calls: the seven lifecycle calls, the five live-migration calls, and more */
#define HANDLE_OP_STR(NAME, HKEY, SKEY, TRACK_SYS, TRACK_PROC)                                        \
    EXPORT HRESULT NAME(void *handle, void *operation, const uint16_t *text) {                        \
        rec_t r; rec_begin(&r, #NAME);                                                                \
        ARG_H(&r, HKEY, handle); ARG_H(&r, "operation", operation); ARG_S(&r, SKEY, text); rec_end(&r); \
        op_track(operation, TRACK_SYS ? handle : NULL, TRACK_PROC ? handle : NULL);                   \
        return answer(#NAME, NULL, NULL);                                                             \
    }
HANDLE_OP_STR(HcsStartComputeSystem, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsShutDownComputeSystem, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsTerminateComputeSystem, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsCrashComputeSystem, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsPauseComputeSystem, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsResumeComputeSystem, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsSaveComputeSystem, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsGetComputeSystemProperties, "computeSystem", "propertyQuery", 1, 0)
#ifndef FAKE_OLD_BUILD
HANDLE_OP_STR(HcsInitializeLiveMigrationOnSource, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsStartLiveMigrationOnSource, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsStartLiveMigrationTransfer, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsFinalizeLiveMigration, "computeSystem", "options", 1, 0)
HANDLE_OP_STR(HcsCancelLiveMigration, "computeSystem", "options", 1, 0)
#endif
HANDLE_OP_STR(HcsTerminateProcess, "process", "options", 0, 1)
HANDLE_OP_STR(HcsSignalProcess, "process", "options", 0, 1)
HANDLE_OP_STR(HcsGetProcessProperties, "process", "propertyQuery", 0, 1)
HANDLE_OP_STR(HcsModifyProcess, "process", "settings", 0, 1)

EXPORT HRESULT HcsModifyComputeSystem(void *computeSystem, void *operation, const uint16_t *configuration,
                                      void *identity) {
    rec_t r; rec_begin(&r, "HcsModifyComputeSystem");
    ARG_H(&r, "computeSystem", computeSystem); ARG_H(&r, "operation", operation);
    ARG_S(&r, "configuration", configuration); ARG_H(&r, "identity", identity); rec_end(&r);
    op_track(operation, computeSystem, NULL);
    return answer(r.name, NULL, NULL);
}
EXPORT HRESULT HcsWaitForComputeSystemExit(void *computeSystem, uint32_t timeoutMs, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsWaitForComputeSystemExit");
    ARG_H(&r, "computeSystem", computeSystem); ARG_U(&r, "timeoutMs", timeoutMs); rec_end(&r);
    return answer(r.name, result, NULL);
}
EXPORT HRESULT HcsSetComputeSystemCallback(void *computeSystem, uint32_t options, void *context, void *callback) {
    rec_t r; rec_begin(&r, "HcsSetComputeSystemCallback");
    ARG_H(&r, "computeSystem", computeSystem); ARG_U(&r, "callbackOptions", options);
    ARG_H(&r, "context", context); ARG_H(&r, "callback", callback); rec_end(&r);
    HRESULT hr = answer(r.name, NULL, NULL);
    if (hr >= 0) reg_set(computeSystem, NULL, callback, context, options);
    return hr;
}

/* Processes */
EXPORT HRESULT HcsCreateProcess(void *computeSystem, const uint16_t *processParameters, void *operation,
                                const void *securityDescriptor, void **process) {
    rec_t r; rec_begin(&r, "HcsCreateProcess");
    ARG_H(&r, "computeSystem", computeSystem); ARG_S(&r, "processParameters", processParameters);
    ARG_H(&r, "operation", operation); ARG_H(&r, "securityDescriptor", securityDescriptor);
    return give_handle(&r, KIND_PROCESS, process, operation);
}
EXPORT HRESULT HcsOpenProcess(void *computeSystem, uint32_t pid, uint32_t requestedAccess, void **process) {
    rec_t r; rec_begin(&r, "HcsOpenProcess");
    ARG_H(&r, "computeSystem", computeSystem); ARG_U(&r, "processId", pid); ARG_U(&r, "requestedAccess", requestedAccess);
    return give_handle(&r, KIND_PROCESS, process, NULL);
}
EXPORT void HcsCloseProcess(void *process) {
    rec_t r; rec_begin(&r, "HcsCloseProcess"); ARG_H(&r, "process", process); rec_end(&r);
    reg_drop(process, NULL);
}
EXPORT HRESULT HcsGetProcessInfo(void *process, void *operation) {
    rec_t r; rec_begin(&r, "HcsGetProcessInfo"); ARG_H(&r, "process", process); ARG_H(&r, "operation", operation);
    rec_end(&r);
    op_track(operation, NULL, process);
    return answer(r.name, NULL, NULL);
}
EXPORT HRESULT HcsSetProcessCallback(void *process, uint32_t options, void *context, void *callback) {
    rec_t r; rec_begin(&r, "HcsSetProcessCallback");
    ARG_H(&r, "process", process); ARG_U(&r, "callbackOptions", options);
    ARG_H(&r, "context", context); ARG_H(&r, "callback", callback); rec_end(&r);
    HRESULT hr = answer(r.name, NULL, NULL);
    if (hr >= 0) reg_set(process, NULL, callback, context, options);
    return hr;
}
EXPORT HRESULT HcsWaitForProcessExit(void *process, uint32_t timeoutMs, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsWaitForProcessExit");
    ARG_H(&r, "process", process); ARG_U(&r, "timeoutMs", timeoutMs); rec_end(&r);
    return answer(r.name, result, NULL);
}

/* Service, files and VM access */
#define STR_DOC(NAME, KEY)                                                           \
    EXPORT HRESULT NAME(const uint16_t *text, uint16_t **result) {                   \
        rec_t r; rec_begin(&r, #NAME); ARG_S(&r, KEY, text); rec_end(&r);             \
        return answer(#NAME, result, NULL);                                          \
    }
#define STR1(NAME, KEY)                                                              \
    EXPORT HRESULT NAME(const uint16_t *text) {                                      \
        rec_t r; rec_begin(&r, #NAME); ARG_S(&r, KEY, text); rec_end(&r);             \
        return answer(#NAME, NULL, NULL);                                            \
    }
#define STR2(NAME)                                                                   \
    EXPORT HRESULT NAME(const uint16_t *vmId, const uint16_t *filePath) {             \
        rec_t r; rec_begin(&r, #NAME); ARG_S(&r, "vmId", vmId); ARG_S(&r, "filePath", filePath); rec_end(&r); \
        return answer(#NAME, NULL, NULL);                                            \
    }
STR_DOC(HcsGetServiceProperties, "propertyQuery")
STR_DOC(HcsModifyServiceSettings, "settings")
STR1(HcsSubmitWerReport, "settings")
STR1(HcsCreateEmptyGuestStateFile, "guestStateFilePath")
STR1(HcsCreateEmptyRuntimeStateFile, "runtimeStateFilePath")
STR2(HcsGrantVmAccess)
STR2(HcsRevokeVmAccess)
STR1(HcsGrantVmGroupAccess, "filePath")
STR1(HcsRevokeVmGroupAccess, "filePath")

/* Test control: deliver events */
typedef struct { event_callback_t callback; void *context; HCS_EVENT event; } fire_t;
static void *fire_event(void *arg) {
    fire_t *f = arg;
    f->callback(&f->event, f->context);
    return NULL;
}

/* Invoke the callback registered on a system or process handle; -1 when there is none (closed, cleared). */
EXPORT int fake_fire_event(void *handle, uint32_t type, const uint16_t *data, void *operation, int threaded) {
    reg_t reg;
    if (!reg_find(handle, &reg)) return -1;
    fire_t f = {(event_callback_t)reg.callback, reg.context, {type, data, operation}};
    run(threaded, fire_event, &f);
    return 0;
}

typedef struct { void *callback, *context, *operation; int with_events; uint32_t type; const uint16_t *data; } done_t;
static void *complete(void *arg) {
    done_t *d = arg;
    if (d->with_events) {
        HCS_EVENT event = {d->type, d->data, d->operation};
        ((event_callback_t)d->callback)(&event, d->context);
    } else {
        ((completion_t)d->callback)(d->operation, d->context);
    }
    return NULL;
}

/* Invoke an operation's callback (completion, or event for ...WithNotifications); -1 without one or if closed. */
EXPORT int fake_complete_operation(void *operation, uint32_t type, const uint16_t *data, int threaded) {
    pthread_mutex_lock(&lock);
    op_t *op = op_find(operation);
    done_t d = {0};
    if (op && !op->closed && op->callback) d = (done_t){op->callback, op->context, operation, op->with_events, type, data};
    pthread_mutex_unlock(&lock);
    if (!d.callback) return -1;
    run(threaded, complete, &d);
    return 0;
}
#endif

/* ================================================================== vmcompute.dll (HCS v1) */
#ifdef FAKE_VMCOMPUTE
typedef void (*notification_t)(uint32_t type, void *context, HRESULT status, const uint16_t *data);
static void reset_ops(void) {}

static HRESULT v1_handle(rec_t *r, int kind, void **out, uint16_t **result) {
    HRESULT hr = answer(r->name, result, NULL);
    void *handle = new_handle(kind);  /* handed out even on failure: the caller must close it */
    if (out) *out = handle;
    OUT_H(r, kind == KIND_SYSTEM ? "computeSystem" : "process", handle);
    rec_end(r);
    return hr;
}
EXPORT HRESULT HcsEnumerateComputeSystems(const uint16_t *query, uint16_t **computeSystems, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsEnumerateComputeSystems"); ARG_S(&r, "query", query); rec_end(&r);
    return answer(r.name, result, computeSystems);
}
EXPORT HRESULT HcsCreateComputeSystem(const uint16_t *id, const uint16_t *configuration, void *identity,
                                      void **computeSystem, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsCreateComputeSystem");
    ARG_S(&r, "id", id); ARG_S(&r, "configuration", configuration); ARG_H(&r, "identity", identity);
    return v1_handle(&r, KIND_SYSTEM, computeSystem, result);
}
EXPORT HRESULT HcsOpenComputeSystem(const uint16_t *id, void **computeSystem, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsOpenComputeSystem"); ARG_S(&r, "id", id);
    return v1_handle(&r, KIND_SYSTEM, computeSystem, result);
}
#define V1_HANDLE_ONLY(NAME, HKEY)                                                               \
    EXPORT HRESULT NAME(void *handle) {                                                          \
        rec_t r; rec_begin(&r, #NAME); ARG_H(&r, HKEY, handle); rec_end(&r);                      \
        return answer(#NAME, NULL, NULL);                                                        \
    }
#define V1_HANDLE_STR(NAME, HKEY, SKEY)                                                          \
    EXPORT HRESULT NAME(void *handle, const uint16_t *text, uint16_t **result) {                 \
        rec_t r; rec_begin(&r, #NAME); ARG_H(&r, HKEY, handle); ARG_S(&r, SKEY, text); rec_end(&r); \
        return answer(#NAME, result, NULL);                                                      \
    }
V1_HANDLE_ONLY(HcsCloseComputeSystem, "computeSystem")
V1_HANDLE_STR(HcsStartComputeSystem, "computeSystem", "options")
V1_HANDLE_STR(HcsShutdownComputeSystem, "computeSystem", "options")
V1_HANDLE_STR(HcsTerminateComputeSystem, "computeSystem", "options")
V1_HANDLE_STR(HcsPauseComputeSystem, "computeSystem", "options")
V1_HANDLE_STR(HcsResumeComputeSystem, "computeSystem", "options")
V1_HANDLE_STR(HcsSaveComputeSystem, "computeSystem", "options")
V1_HANDLE_STR(HcsModifyComputeSystem, "computeSystem", "configuration")
V1_HANDLE_STR(HcsSignalProcess, "process", "options")
V1_HANDLE_STR(HcsModifyProcess, "process", "settings")
V1_HANDLE_ONLY(HcsCloseProcess, "process")

EXPORT HRESULT HcsGetComputeSystemProperties(void *computeSystem, const uint16_t *propertyQuery,
                                             uint16_t **properties, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsGetComputeSystemProperties");
    ARG_H(&r, "computeSystem", computeSystem); ARG_S(&r, "propertyQuery", propertyQuery); rec_end(&r);
    return answer(r.name, result, properties);
}
EXPORT HRESULT HcsGetServiceProperties(const uint16_t *propertyQuery, uint16_t **properties, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsGetServiceProperties"); ARG_S(&r, "propertyQuery", propertyQuery); rec_end(&r);
    return answer(r.name, result, properties);
}
EXPORT HRESULT HcsModifyServiceSettings(const uint16_t *settings, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsModifyServiceSettings"); ARG_S(&r, "settings", settings); rec_end(&r);
    return answer(r.name, result, NULL);
}
static HRESULT v1_register(const char *name, const char *hkey, void *handle, void *callback, void *context,
                           void **callbackHandle) {
    rec_t r; rec_begin(&r, name);
    ARG_H(&r, hkey, handle); ARG_H(&r, "callback", callback); ARG_H(&r, "context", context);
    HRESULT hr = answer(name, NULL, NULL);
    void *cb = NULL;
    if (hr >= 0) {
        cb = new_handle(KIND_CALLBACK);
        reg_set(handle, cb, callback, context, 0);
    }
    if (callbackHandle) *callbackHandle = cb;
    OUT_H(&r, "callbackHandle", cb);
    rec_end(&r);
    return hr;
}
EXPORT HRESULT HcsRegisterComputeSystemCallback(void *computeSystem, void *callback, void *context,
                                                void **callbackHandle) {
    return v1_register("HcsRegisterComputeSystemCallback", "computeSystem", computeSystem, callback, context,
                       callbackHandle);
}
EXPORT HRESULT HcsRegisterProcessCallback(void *process, void *callback, void *context, void **callbackHandle) {
    return v1_register("HcsRegisterProcessCallback", "process", process, callback, context, callbackHandle);
}
EXPORT HRESULT HcsUnregisterComputeSystemCallback(void *callbackHandle) {
    rec_t r; rec_begin(&r, "HcsUnregisterComputeSystemCallback"); ARG_H(&r, "callbackHandle", callbackHandle);
    rec_end(&r);
    reg_drop(NULL, callbackHandle);
    return answer(r.name, NULL, NULL);
}
EXPORT HRESULT HcsUnregisterProcessCallback(void *callbackHandle) {
    rec_t r; rec_begin(&r, "HcsUnregisterProcessCallback"); ARG_H(&r, "callbackHandle", callbackHandle);
    rec_end(&r);
    reg_drop(NULL, callbackHandle);
    return answer(r.name, NULL, NULL);
}
EXPORT HRESULT HcsCreateProcess(void *computeSystem, const uint16_t *processParameters, process_info_t *info,
                                void **process, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsCreateProcess");
    ARG_H(&r, "computeSystem", computeSystem); ARG_S(&r, "processParameters", processParameters);
    fill_info(info);
    return v1_handle(&r, KIND_PROCESS, process, result);
}
EXPORT HRESULT HcsOpenProcess(void *computeSystem, uint32_t pid, void **process, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsOpenProcess"); ARG_H(&r, "computeSystem", computeSystem); ARG_U(&r, "processId", pid);
    return v1_handle(&r, KIND_PROCESS, process, result);
}
EXPORT HRESULT HcsTerminateProcess(void *process, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsTerminateProcess"); ARG_H(&r, "process", process); rec_end(&r);
    return answer(r.name, result, NULL);
}
EXPORT HRESULT HcsGetProcessInfo(void *process, process_info_t *info, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsGetProcessInfo"); ARG_H(&r, "process", process); rec_end(&r);
    fill_info(info);
    return answer(r.name, result, NULL);
}
EXPORT HRESULT HcsGetProcessProperties(void *process, uint16_t **processProperties, uint16_t **result) {
    rec_t r; rec_begin(&r, "HcsGetProcessProperties"); ARG_H(&r, "process", process); rec_end(&r);
    return answer(r.name, result, processProperties);
}

typedef struct { notification_t callback; void *context; uint32_t type; HRESULT status; const uint16_t *data; } note_t;
static void *fire_notification(void *arg) {
    note_t *n = arg;
    n->callback(n->type, n->context, n->status, n->data);
    return NULL;
}

/* Invoke the callback registered under a callback handle (or on a system/process handle); -1 when none. */
EXPORT int fake_fire_notification(void *handle, uint32_t type, HRESULT status, const uint16_t *data, int threaded) {
    reg_t reg;
    if (!reg_find(handle, &reg)) return -1;
    note_t n = {(notification_t)reg.callback, reg.context, type, status, data};
    run(threaded, fire_notification, &n);
    return 0;
}
#endif
