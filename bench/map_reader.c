// The C peer of bench/bench_maps.py: read every element of a hash map (u32 keys, u64 values)
// with libbpf's bpf_map_lookup_batch(), as the Python readers do, and time each read.
//
//   map_reader MAP_ID RUNS CHUNK
//
// Prints one line per run, "ms elements sum", where sum is the sum of the values read (the
// Python side checks it), timed with CLOCK_MONOTONIC around the reads only (no start-up).
// Built by the benchmark with: clang -O2 map_reader.c -lbpf (libbpf-dev).
#include <bpf/bpf.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s MAP_ID RUNS CHUNK\n", argv[0]);
		return 2;
	}
	int fd = bpf_map_get_fd_by_id(atoi(argv[1]));
	int runs = atoi(argv[2]);
	uint32_t chunk = atoi(argv[3]);
	struct bpf_map_info info = {};
	uint32_t info_len = sizeof(info);

	if (fd < 0 || bpf_obj_get_info_by_fd(fd, &info, &info_len)) {
		perror("map");
		return 1;
	}
	// room for the whole map: a batch ends at the end of a hash bucket, never past max_entries
	uint32_t *keys = malloc((size_t)info.max_entries * sizeof(*keys));
	uint64_t *values = malloc((size_t)info.max_entries * sizeof(*values));

	for (int run = 0; run < runs; run++) {
		double start = now_ms();
		uint32_t total = 0, batch = 0, count;
		int err = 0;
		void *in = NULL;

		while (!err && total < info.max_entries) {
			count = chunk;
			if (count > info.max_entries - total)
				count = info.max_entries - total;
			err = bpf_map_lookup_batch(fd, in, &batch, keys + total, values + total,
						   &count, NULL);
			if (err && errno != ENOENT) {  // ENOENT: the last batch
				perror("bpf_map_lookup_batch");
				return 1;
			}
			total += count;
			in = &batch;
		}
		double ms = now_ms() - start;
		uint64_t sum = 0;

		for (uint32_t i = 0; i < total; i++)
			sum += values[i];
		printf("%.3f %u %llu\n", ms, total, (unsigned long long)sum);
	}
	return 0;
}
