/* Who holds the resident memory: an LD_PRELOAD allocation tracer for bench/heap_trace.py.

   It wraps malloc, calloc, realloc, free, memalign, aligned_alloc and posix_memalign, and keeps
   every live block of at least TRACE_MIN_BYTES with the call stack that allocated it. Calling
   heap_trace_report(path) (ctypes) writes each live block's size, how much of it is resident
   (mincore) and its stack; heap_trace.py turns that into a table by owner.

   Build on the host (the image has no compiler); it links only glibc symbols as old as 2.3, so
   the library loads in the image:
       cc -O2 -shared -fPIC -o runs/heap_trace.so bench/heap_trace.c
*/
#define _GNU_SOURCE
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

#define TRACE_MIN_BYTES (1u << 20)
#define MAX_BLOCKS 16384
#define STACK_DEPTH 24

typedef struct {
  void *address;
  size_t bytes;
  int depth;
  void *stack[STACK_DEPTH];
} block_t;

static block_t blocks[MAX_BLOCKS];
static volatile int table_lock;
/* backtrace() may allocate (it loads libgcc_s once): those allocations are not traced. */
static __thread int in_tracer;

static void lock(void) {
  while (__atomic_exchange_n(&table_lock, 1, __ATOMIC_ACQUIRE)) {
  }
}

static void unlock(void) { __atomic_store_n(&table_lock, 0, __ATOMIC_RELEASE); }

static void remember(void *address, size_t bytes) {
  if (!address || bytes < TRACE_MIN_BYTES || in_tracer) return;
  in_tracer = 1;
  void *stack[STACK_DEPTH];
  int depth = backtrace(stack, STACK_DEPTH);
  lock();
  for (int i = 0; i < MAX_BLOCKS; i++) {
    if (!blocks[i].address) {
      blocks[i].address = address;
      blocks[i].bytes = bytes;
      blocks[i].depth = depth;
      memcpy(blocks[i].stack, stack, sizeof stack);
      break;
    }
  }
  unlock();
  in_tracer = 0;
}

static void forget(void *address) {
  /* Most frees are of small blocks, which were never in the table: skip the search for them. */
  if (!address || malloc_usable_size(address) < TRACE_MIN_BYTES) return;
  lock();
  for (int i = 0; i < MAX_BLOCKS; i++) {
    if (blocks[i].address == address) {
      blocks[i].address = 0;
      break;
    }
  }
  unlock();
}

void *malloc(size_t bytes) {
  void *p = __libc_malloc(bytes);
  remember(p, bytes);
  return p;
}

void *calloc(size_t count, size_t size) {
  void *p = __libc_calloc(count, size);
  remember(p, count * size);
  return p;
}

void free(void *p) {
  forget(p);
  __libc_free(p);
}

void *realloc(void *old, size_t bytes) {
  forget(old);
  void *p = __libc_realloc(old, bytes);
  remember(p, bytes);
  return p;
}

void *memalign(size_t alignment, size_t bytes) {
  void *p = __libc_memalign(alignment, bytes);
  remember(p, bytes);
  return p;
}

void *aligned_alloc(size_t alignment, size_t bytes) { return memalign(alignment, bytes); }

int posix_memalign(void **out, size_t alignment, size_t bytes) {
  void *p = __libc_memalign(alignment, bytes);
  if (!p) return ENOMEM;
  remember(p, bytes);
  *out = p;
  return 0;
}

static size_t resident_bytes(const block_t *block) {
  static unsigned char pages_in[1 << 20];
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t start = (uintptr_t)block->address & ~(uintptr_t)(page - 1);
  size_t pages = ((uintptr_t)block->address + block->bytes - start + page - 1) / page, resident = 0;
  for (size_t done = 0; done < pages; done += sizeof pages_in) {
    size_t n = pages - done < sizeof pages_in ? pages - done : sizeof pages_in;
    if (mincore((void *)(start + done * page), n * page, pages_in) != 0) return 0;
    for (size_t j = 0; j < n; j++) resident += pages_in[j] & 1;
  }
  return resident * page;
}

/* One "BLOCK <bytes> <resident bytes>" line per live block, then its stack, one frame per line. */
int heap_trace_report(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -1;
  in_tracer = 1;
  lock();
  for (int i = 0; i < MAX_BLOCKS; i++) {
    if (!blocks[i].address) continue;
    char line[96];
    int n = snprintf(line, sizeof line, "BLOCK %zu %zu\n", blocks[i].bytes, resident_bytes(&blocks[i]));
    if (write(fd, line, n) != n) break;
    backtrace_symbols_fd(blocks[i].stack, blocks[i].depth, fd);
  }
  unlock();
  in_tracer = 0;
  close(fd);
  return 0;
}
