// The C reference for `make bench`: the same krb5 calls the library makes for one verified login
// (krb5_get_init_creds_password + krb5_verify_init_creds with nofail), in a loop on N threads, one
// krb5_context per thread. Prints one JSON line: logins, seconds, p50/p99 latency, failures, max RSS.
//
//   KRB5_BENCH_PASSWORD=… krb5-reference CONFIG PRINCIPAL KEYTAB SERVER THREADS SECONDS
#include <krb5/krb5.h>
#include <profile.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_SAMPLES 1000000

static const char *config, *client_name, *password, *keytab_name, *server_name;
static double seconds;
static double samples[MAX_SAMPLES];
static long sample_count, failures;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *worker(void *unused) {
    (void)unused;
    profile_t profile = NULL;
    krb5_context context = NULL;
    if (profile_init_path(config, &profile) != 0 || krb5_init_context_profile(profile, 0, &context) != 0) {
        fprintf(stderr, "cannot create a context from %s\n", config);
        exit(2);
    }
    profile_release(profile);
    krb5_principal client = NULL, server = NULL;
    krb5_keytab keytab = NULL;
    krb5_parse_name(context, client_name, &client);
    krb5_parse_name(context, server_name, &server);
    krb5_kt_resolve(context, keytab_name, &keytab);
    krb5_verify_init_creds_opt vopt;
    krb5_verify_init_creds_opt_init(&vopt);
    krb5_verify_init_creds_opt_set_ap_req_nofail(&vopt, 1);
    double end = now() + seconds;
    while (now() < end) {
        double start = now();
        krb5_creds creds;
        memset(&creds, 0, sizeof creds);
        krb5_error_code code = krb5_get_init_creds_password(context, &creds, client, password, NULL, NULL, 0, NULL, NULL);
        if (code == 0) {
            code = krb5_verify_init_creds(context, &creds, server, keytab, NULL, &vopt);
            krb5_free_cred_contents(context, &creds);
        }
        double elapsed = now() - start;
        pthread_mutex_lock(&lock);
        if (code != 0) failures++;
        if (sample_count < MAX_SAMPLES) samples[sample_count++] = elapsed;
        pthread_mutex_unlock(&lock);
    }
    krb5_kt_close(context, keytab);
    krb5_free_principal(context, server);
    krb5_free_principal(context, client);
    krb5_free_context(context);
    return NULL;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    password = getenv("KRB5_BENCH_PASSWORD");
    if (argc != 7 || password == NULL) {
        fprintf(stderr, "usage: KRB5_BENCH_PASSWORD=… krb5-reference CONFIG PRINCIPAL KEYTAB SERVER THREADS SECONDS\n");
        return 2;
    }
    config = argv[1]; client_name = argv[2]; keytab_name = argv[3]; server_name = argv[4];
    int threads = atoi(argv[5]);
    seconds = atof(argv[6]);
    if (threads < 1 || threads > 64 || seconds <= 0) return 2;
    pthread_t ids[64];
    double start = now();
    for (int i = 0; i < threads; i++) pthread_create(&ids[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    double total = now() - start;
    qsort(samples, sample_count, sizeof samples[0], compare);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    printf("{\"logins\":%ld,\"seconds\":%.3f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"failures\":%ld,\"max_rss_kb\":%ld}\n",
           sample_count, total, sample_count ? samples[sample_count / 2] * 1000 : 0,
           sample_count ? samples[(long)(sample_count * 0.99)] * 1000 : 0, failures, usage.ru_maxrss);
    return failures ? 1 : 0;
}
