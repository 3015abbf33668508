/*
 * fakejob: a stand-in for the kernel32.dll and ntdll.dll job-object functions hcsshim.hcs.win32.jobobject binds,
 * with the same C interface and the Windows x64 structure layouts, so the binding can be tested on Linux. One
 * library serves both DLLs (libfakejobobject.so).
 *
 * The fake keeps named jobs (fake_job_define) with canned counters and member processes, hands out handles
 * (kind << 40 | n) for opened jobs and processes, and records every call as a JSON object {"function": name,
 * "args": {...}} (fake_job_calls). A kernel32 call fails as Windows' do, FALSE/NULL with the last error in errno
 * (the bindings read it as the last error); an ntdll call returns an NTSTATUS. fake_job_fail makes a function
 * fail with a given code (a Win32 error, or for Nt* functions an NTSTATUS) until cleared.
 */
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))
typedef int32_t BOOL;
typedef uint32_t NTSTATUS;

#define ERROR_INVALID_HANDLE 6
#define ERROR_BAD_LENGTH 24
#define ERROR_INVALID_PARAMETER 87
#define ERROR_MORE_DATA 234
#define STATUS_INFO_LENGTH_MISMATCH 0xC0000004u
#define STATUS_INVALID_HANDLE 0xC0000008u
#define STATUS_ACCESS_DENIED 0xC0000022u
#define STATUS_OBJECT_NAME_NOT_FOUND 0xC0000034u

typedef struct { uint16_t Length, MaximumLength; uint16_t *Buffer; } UNICODE_STRING;
typedef struct {
    uint32_t Length; void *RootDirectory; UNICODE_STRING *ObjectName; uint32_t Attributes;
    void *SecurityDescriptor, *SecurityQualityOfService;
} OBJECT_ATTRIBUTES;
typedef struct {
    int64_t TotalUserTime, TotalKernelTime, ThisPeriodTotalUserTime, ThisPeriodTotalKernelTime;
    uint32_t TotalPageFaultCount, TotalProcesses, ActiveProcesses, TotalTerminatedProcesses;
} ACCOUNTING;
typedef struct { uint64_t JobMemory, PeakJobMemoryUsed; } MEMORY_USAGE;
typedef struct { uintptr_t IoCount; uint64_t QueueTime, ServiceTime, TotalSize; } IO_STATS;
typedef struct { uint32_t ControlFlags; IO_STATS ReadStats, WriteStats; } IO_ATTRIBUTION;
typedef struct { uint32_t NumberOfAssignedProcesses, NumberOfProcessIdsInList; uintptr_t ProcessIdList[1]; } PID_LIST;
typedef struct { uintptr_t Mask; uint16_t Group, Reserved[3]; } GROUP_AFFINITY;
typedef struct {
    uintptr_t PeakVirtualSize, VirtualSize; uint32_t PageFaultCount;
    uintptr_t PeakWorkingSetSize, WorkingSetSize, QuotaPeakPagedPoolUsage, QuotaPagedPoolUsage,
        QuotaPeakNonPagedPoolUsage, QuotaNonPagedPoolUsage, PagefileUsage, PeakPagefileUsage, PrivateUsage,
        PrivateWorkingSetSize, SharedCommitUsage;
} VM_COUNTERS_EX2;

#define MAX_JOBS 16
#define MAX_PROCS 256
#define MAX_AFFINITIES 16
#define MAX_HANDLES 1024
#define MAX_CALLS 1024

typedef struct {
    char name[256];
    ACCOUNTING accounting; MEMORY_USAGE memory; IO_ATTRIBUTION io; int io_tracking;
    GROUP_AFFINITY affinities[MAX_AFFINITIES]; int naffinities;
} job_t;
typedef struct { int job; uint32_t pid; uint64_t private_working_set; int openable, in_job; } proc_t;
typedef struct { uint64_t value; int kind, index, open; } handle_t;  /* kind 1 job, 2 process */
typedef struct { char function[64]; uint32_t code; } failure_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static job_t jobs[MAX_JOBS];
static int njobs;
static proc_t procs[MAX_PROCS];
static int nprocs;
static handle_t handles[MAX_HANDLES];
static int nhandles;
static failure_t failures[16];
static int nfailures;
static char *calls[MAX_CALLS];
static int ncalls;
static char *calls_json;

/* ------------------------------------------------------------------ recording */
static void record(const char *function, const char *args) {
    size_t n = strlen(function) + strlen(args) + 40;
    char *rec = malloc(n);
    snprintf(rec, n, "{\"function\": \"%s\", \"args\": {%s}}", function, args);
    if (ncalls < MAX_CALLS) calls[ncalls++] = rec; else free(rec);
}

static uint32_t failing(const char *function) {
    for (int i = 0; i < nfailures; i++)
        if (!strcmp(failures[i].function, function)) return failures[i].code;
    return 0;
}

/* Lock, record the call (`format` gives the JSON members of "args") and say how it is to fail (0: not). */
static uint32_t begin(const char *function, const char *format, ...) {
    char args[640];
    va_list ap;
    va_start(ap, format);
    vsnprintf(args, sizeof args, format, ap);
    va_end(ap);
    pthread_mutex_lock(&lock);
    record(function, args);
    return failing(function);
}

static BOOL fail_win32(uint32_t code) {
    errno = (int)code;
    return 0;
}

static uint64_t new_handle(int kind, int index) {
    if (nhandles >= MAX_HANDLES) return 0;
    handle_t *h = &handles[nhandles];
    h->value = ((uint64_t)(kind == 1 ? 0x4A : 0x50) << 40) | (uint64_t)(nhandles + 1);
    h->kind = kind; h->index = index; h->open = 1;
    nhandles++;
    return h->value;
}

static handle_t *find_handle(void *value, int kind) {
    for (int i = 0; i < nhandles; i++)
        if (handles[i].value == (uint64_t)(uintptr_t)value && handles[i].open && (!kind || handles[i].kind == kind))
            return &handles[i];
    return NULL;
}

static int find_job(const char *name) {
    for (int i = 0; i < njobs; i++)
        if (!strcmp(jobs[i].name, name)) return i;
    return -1;
}

/* A UNICODE_STRING as text: ASCII kept, anything else as '?'. */
static void narrow(const UNICODE_STRING *s, char *out, size_t size) {
    size_t n = 0;
    if (s && s->Buffer)
        for (size_t i = 0; i < s->Length / 2u && n + 1 < size; i++) {
            uint16_t c = s->Buffer[i];
            out[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
        }
    out[n] = 0;
}

/* `text` as the inside of a JSON string (backslashes doubled, quotes dropped to '?'). */
static void json_text(const char *text, char *out, size_t size) {
    size_t n = 0;
    for (; *text && n + 2 < size; text++) {
        if (*text == '\\') out[n++] = '\\';
        out[n++] = *text == '"' ? '?' : *text;
    }
    out[n] = 0;
}

/* ------------------------------------------------------------------ ntdll */
EXPORT NTSTATUS NtOpenJobObject(void **handle, uint32_t access, OBJECT_ATTRIBUTES *attributes) {
    char name[256], quoted[512];
    narrow(attributes ? attributes->ObjectName : NULL, name, sizeof name);
    json_text(name, quoted, sizeof quoted);
    NTSTATUS status = begin("NtOpenJobObject", "\"name\": \"%s\", \"access\": %u, \"length\": %u", quoted, access,
                            attributes ? attributes->Length : 0);
    int job = status ? -1 : find_job(name);
    if (!status && job < 0) status = STATUS_OBJECT_NAME_NOT_FOUND;
    if (!status) *handle = (void *)(uintptr_t)new_handle(1, job);
    pthread_mutex_unlock(&lock);
    return status;
}

EXPORT uint32_t RtlNtStatusToDosError(NTSTATUS status) {
    switch (status) {
    case 0: return 0;
    case STATUS_OBJECT_NAME_NOT_FOUND: return 2;   /* ERROR_FILE_NOT_FOUND */
    case STATUS_ACCESS_DENIED: return 5;           /* ERROR_ACCESS_DENIED */
    case STATUS_INVALID_HANDLE: return ERROR_INVALID_HANDLE;
    case STATUS_INFO_LENGTH_MISMATCH: return ERROR_BAD_LENGTH;
    default: return 317;                           /* ERROR_MR_MID_NOT_FOUND */
    }
}

EXPORT NTSTATUS NtQueryInformationProcess(void *process, uint32_t info_class, void *info, uint32_t length,
                                          uint32_t *returned) {
    NTSTATUS status = begin("NtQueryInformationProcess", "\"process\": %llu, \"class\": %u, \"length\": %u",
                            (unsigned long long)(uintptr_t)process, info_class, length);
    handle_t *h = find_handle(process, 2);
    if (!status && !h) status = STATUS_INVALID_HANDLE;
    if (!status && (info_class != 3 || length < sizeof(VM_COUNTERS_EX2))) status = STATUS_INFO_LENGTH_MISMATCH;
    if (!status) {
        VM_COUNTERS_EX2 *c = info;
        memset(c, 0, sizeof *c);
        c->PrivateWorkingSetSize = (uintptr_t)procs[h->index].private_working_set;
        c->WorkingSetSize = c->PrivateWorkingSetSize * 2;
        if (returned) *returned = sizeof *c;
    }
    pthread_mutex_unlock(&lock);
    return status;
}

/* ------------------------------------------------------------------ kernel32 */
static BOOL query(job_t *job, uint32_t info_class, void *info, uint32_t length, uint32_t *returned) {
    uint32_t need = 0;
    switch (info_class) {
    case 1: need = sizeof(ACCOUNTING); break;
    case 3: need = offsetof(PID_LIST, ProcessIdList); break;
    case 28: need = sizeof(MEMORY_USAGE); break;
    case 42: need = sizeof(IO_ATTRIBUTION); break;
    default: return fail_win32(ERROR_INVALID_PARAMETER);
    }
    if (length < need) return fail_win32(ERROR_BAD_LENGTH);
    if (info_class == 1) memcpy(info, &job->accounting, need);
    if (info_class == 28) memcpy(info, &job->memory, need);
    if (info_class == 42) {
        IO_ATTRIBUTION *io = info;
        if (io->ControlFlags != 1 || !job->io_tracking) return fail_win32(ERROR_INVALID_PARAMETER);
        memcpy(io, &job->io, need);
        io->ControlFlags = 1;
    }
    if (info_class == 3) {
        PID_LIST *list = info;
        uint32_t slots = (length - need) / sizeof(uintptr_t), members = 0, listed = 0;
        for (int i = 0; i < nprocs; i++) {
            if (procs[i].job != job - jobs || !procs[i].in_job) continue;
            members++;
            if (listed < slots) list->ProcessIdList[listed++] = procs[i].pid;
        }
        list->NumberOfAssignedProcesses = members;
        list->NumberOfProcessIdsInList = listed;
        need += listed * (uint32_t)sizeof(uintptr_t);
        if (returned) *returned = need;
        if (listed < members) return fail_win32(ERROR_MORE_DATA);
    }
    if (returned) *returned = need;
    return 1;
}

EXPORT BOOL QueryInformationJobObject(void *handle, uint32_t info_class, void *info, uint32_t length,
                                      uint32_t *returned) {
    uint32_t code = begin("QueryInformationJobObject", "\"job\": %llu, \"class\": %u, \"length\": %u",
                          (unsigned long long)(uintptr_t)handle, info_class, length);
    handle_t *h = find_handle(handle, 1);
    BOOL ok = code ? fail_win32(code) : !h ? fail_win32(ERROR_INVALID_HANDLE)
                                           : query(&jobs[h->index], info_class, info, length, returned);
    pthread_mutex_unlock(&lock);
    return ok;
}

EXPORT BOOL SetInformationJobObject(void *handle, uint32_t info_class, void *info, uint32_t length) {
    uint32_t code = begin("SetInformationJobObject", "\"job\": %llu, \"class\": %u, \"length\": %u",
                          (unsigned long long)(uintptr_t)handle, info_class, length);
    handle_t *h = find_handle(handle, 1);
    BOOL ok = 1;
    if (code) ok = fail_win32(code);
    else if (!h) ok = fail_win32(ERROR_INVALID_HANDLE);
    else if (info_class != 14) ok = fail_win32(ERROR_INVALID_PARAMETER);
    else if (!length || length % sizeof(GROUP_AFFINITY) || length / sizeof(GROUP_AFFINITY) > MAX_AFFINITIES)
        ok = fail_win32(ERROR_BAD_LENGTH);
    else {
        job_t *job = &jobs[h->index];
        GROUP_AFFINITY *given = info;
        int n = (int)(length / sizeof(GROUP_AFFINITY));
        for (int i = 0; i < n && ok; i++)
            if (given[i].Reserved[0] || given[i].Reserved[1] || given[i].Reserved[2])
                ok = fail_win32(ERROR_INVALID_PARAMETER);
        if (ok) {
            memcpy(job->affinities, given, length);
            job->naffinities = n;
        }
    }
    pthread_mutex_unlock(&lock);
    return ok;
}

EXPORT BOOL CloseHandle(void *handle) {
    uint32_t code = begin("CloseHandle", "\"handle\": %llu", (unsigned long long)(uintptr_t)handle);
    handle_t *h = find_handle(handle, 0);
    if (h) h->open = 0;  /* closed even when told to fail, as Windows closes what it can */
    pthread_mutex_unlock(&lock);
    return code ? fail_win32(code) : h ? 1 : fail_win32(ERROR_INVALID_HANDLE);
}

EXPORT void *OpenProcess(uint32_t access, BOOL inherit, uint32_t pid) {
    uint32_t code = begin("OpenProcess", "\"access\": %u, \"inherit\": %d, \"pid\": %u", access, inherit, pid);
    int found = -1;
    for (int i = 0; i < nprocs; i++)
        if (procs[i].pid == pid && procs[i].openable) found = i;
    void *handle = NULL;
    if (code) fail_win32(code);
    else if (found < 0) fail_win32(ERROR_INVALID_PARAMETER);  /* what Windows says for a pid that is gone */
    else handle = (void *)(uintptr_t)new_handle(2, found);
    pthread_mutex_unlock(&lock);
    return handle;
}

EXPORT BOOL IsProcessInJob(void *process, void *job, BOOL *result) {
    uint32_t code = begin("IsProcessInJob", "\"process\": %llu, \"job\": %llu",
                          (unsigned long long)(uintptr_t)process, (unsigned long long)(uintptr_t)job);
    handle_t *p = find_handle(process, 2), *j = find_handle(job, 1);
    BOOL ok = 1;
    if (code) ok = fail_win32(code);
    else if (!p || !j) ok = fail_win32(ERROR_INVALID_HANDLE);
    else *result = procs[p->index].in_job && procs[p->index].job == j->index;
    pthread_mutex_unlock(&lock);
    return ok;
}

/* ------------------------------------------------------------------ test control */
EXPORT void fake_job_reset(void) {
    pthread_mutex_lock(&lock);
    njobs = nprocs = nhandles = nfailures = 0;
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < ncalls; i++) free(calls[i]);
    ncalls = 0;
    pthread_mutex_unlock(&lock);
}

/* A job named `name` (UTF-8, e.g. "\\Container_c1") with I/O tracking on; its index. */
EXPORT int fake_job_define(const char *name) {
    pthread_mutex_lock(&lock);
    int i = find_job(name);
    if (i < 0 && njobs < MAX_JOBS) {
        i = njobs++;
        snprintf(jobs[i].name, sizeof jobs[i].name, "%s", name);
        jobs[i].io_tracking = 1;
    }
    pthread_mutex_unlock(&lock);
    return i;
}

EXPORT void fake_job_set_counters(int job, uint64_t job_memory, uint64_t peak_job_memory, int64_t user_time,
                                  int64_t kernel_time, uint64_t read_count, uint64_t read_bytes,
                                  uint64_t write_count, uint64_t write_bytes, int io_tracking) {
    pthread_mutex_lock(&lock);
    job_t *j = &jobs[job];
    j->memory = (MEMORY_USAGE){job_memory, peak_job_memory};
    j->accounting.TotalUserTime = user_time;
    j->accounting.TotalKernelTime = kernel_time;
    j->accounting.TotalProcesses = 1;
    j->io.ReadStats = (IO_STATS){(uintptr_t)read_count, 0, 0, read_bytes};
    j->io.WriteStats = (IO_STATS){(uintptr_t)write_count, 0, 0, write_bytes};
    j->io_tracking = io_tracking;
    pthread_mutex_unlock(&lock);
}

/* A process `pid` belonging to `job` (in_job 0: its pid is listed no more, or was reused elsewhere). */
EXPORT void fake_job_add_process(int job, uint32_t pid, uint64_t private_working_set, int openable, int in_job) {
    pthread_mutex_lock(&lock);
    if (nprocs < MAX_PROCS) procs[nprocs++] = (proc_t){job, pid, private_working_set, openable, in_job};
    pthread_mutex_unlock(&lock);
}

/* Make `function` fail with `code` (0 clears it). */
EXPORT void fake_job_fail(const char *function, uint32_t code) {
    pthread_mutex_lock(&lock);
    int i = 0;
    while (i < nfailures && strcmp(failures[i].function, function)) i++;
    if (i == nfailures && nfailures < 16) nfailures++;
    snprintf(failures[i].function, sizeof failures[i].function, "%s", function);
    failures[i].code = code;
    pthread_mutex_unlock(&lock);
}

/* The affinities set on `job`, as JSON: [[group, mask], ...]. Valid until the next call. */
static char affinities_json[MAX_AFFINITIES * 48 + 8];
EXPORT const char *fake_job_affinities(int job) {
    pthread_mutex_lock(&lock);
    size_t n = 0;
    n += (size_t)snprintf(affinities_json + n, sizeof affinities_json - n, "[");
    for (int i = 0; i < jobs[job].naffinities; i++)
        n += (size_t)snprintf(affinities_json + n, sizeof affinities_json - n, "%s[%u, %llu]", i ? ", " : "",
                              jobs[job].affinities[i].Group, (unsigned long long)jobs[job].affinities[i].Mask);
    snprintf(affinities_json + n, sizeof affinities_json - n, "]");
    pthread_mutex_unlock(&lock);
    return affinities_json;
}

/* Handles handed out and not closed. */
EXPORT int fake_job_open_handles(void) {
    pthread_mutex_lock(&lock);
    int open = 0;
    for (int i = 0; i < nhandles; i++) open += handles[i].open;
    pthread_mutex_unlock(&lock);
    return open;
}

/* Every call so far, as a JSON array. Valid until the next call. */
EXPORT const char *fake_job_calls(void) {
    pthread_mutex_lock(&lock);
    size_t size = 3;
    for (int i = 0; i < ncalls; i++) size += strlen(calls[i]) + 2;
    free(calls_json);
    calls_json = malloc(size);
    size_t n = 0;
    calls_json[n++] = '[';
    for (int i = 0; i < ncalls; i++) {
        if (i) { calls_json[n++] = ','; calls_json[n++] = ' '; }
        memcpy(calls_json + n, calls[i], strlen(calls[i]));
        n += strlen(calls[i]);
    }
    calls_json[n++] = ']';
    calls_json[n] = 0;
    pthread_mutex_unlock(&lock);
    return calls_json;
}
