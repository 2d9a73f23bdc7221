/* wordfreq: the small real program behind data/wordfreq.lackey.xz.
 *
 * It makes a pseudo-random text, counts its words in a chained hash table, sorts them,
 * touches an mmap'd buffer, and copies /proc/self/maps to argv[1] at one known point
 * (after every allocation, before anything is freed), so the maps file is the address
 * space that goes with the trace. Built and traced by data/make_trace.sh.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NWORDS 8000
#define NBUCKETS 4096

struct node { char *word; int count; struct node *next; };

static unsigned lcg(unsigned *s) { *s = *s * 1103515245u + 12345u; return *s >> 8; }

static int by_count(const void *a, const void *b) {
    const struct node *x = *(struct node *const *)a, *y = *(struct node *const *)b;
    return y->count != x->count ? y->count - x->count : strcmp(x->word, y->word);
}

static void copy_maps(const char *out) {
    char buf[4096];
    int in = open("/proc/self/maps", O_RDONLY), fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ssize_t n;
    if (in < 0 || fd < 0) { perror("maps"); exit(1); }
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(fd, buf, n) != n) { perror("write"); exit(1); }
    close(in);
    close(fd);
}

int main(int argc, char **argv) {
    static const char *syll[] = {"ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pe", "zu"};
    unsigned seed = 42;
    char *text = malloc(NWORDS * 12), *p = text;
    struct node **table = calloc(NBUCKETS, sizeof *table), **all;
    int distinct = 0, i;
    if (argc < 2) { fprintf(stderr, "usage: wordfreq MAPS_OUT\n"); return 2; }
    for (i = 0; i < NWORDS; i++) {                      /* Zipf-ish word lengths and syllables */
        int k, len = 1 + (lcg(&seed) % 7 == 0) + (lcg(&seed) % 3 == 0);
        for (k = 0; k < len; k++) {
            const char *s = syll[(lcg(&seed) % 10) * (lcg(&seed) % 10) / 10];
            size_t l = strlen(s);
            memcpy(p, s, l);
            p += l;
        }
        *p++ = ' ';
    }
    *p = 0;
    for (p = strtok(text, " "); p; p = strtok(NULL, " ")) {
        unsigned h = 5381;
        const char *c;
        struct node *n;
        for (c = p; *c; c++) h = h * 33 + (unsigned char)*c;
        for (n = table[h % NBUCKETS]; n && strcmp(n->word, p); n = n->next) ;
        if (!n) {
            n = malloc(sizeof *n);
            n->word = strdup(p);
            n->count = 0;
            n->next = table[h % NBUCKETS];
            table[h % NBUCKETS] = n;
            distinct++;
        }
        n->count++;
    }
    all = malloc(distinct * sizeof *all);
    for (i = 0, distinct = 0; i < NBUCKETS; i++) {
        struct node *n;
        for (n = table[i]; n; n = n->next) all[distinct++] = n;
    }
    qsort(all, distinct, sizeof *all, by_count);
    {
        size_t sz = 1 << 20;
        volatile char *buf = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        size_t off;
        long sum = 0;
        for (off = 0; off < sz; off += 4096) buf[off] = (char)(off >> 12);
        for (off = 0; off < sz; off += 4096) sum += buf[off];
        copy_maps(argv[1]);                             /* the known point */
        munmap((void *)buf, sz);
        printf("%d words, %d distinct; checksum %ld; top:", NWORDS, distinct, sum);
    }
    for (i = 0; i < 5 && i < distinct; i++) printf(" %s=%d", all[i]->word, all[i]->count);
    printf("\n");
    return 0;
}
