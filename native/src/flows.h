/*
 * flows.h — internal constants of the flow tracker (native/src/flows.c).
 * The public API is in p3dp.h; these numbers are implementation choices,
 * kept here so that the tests can name them.
 */
#ifndef P3DP_FLOWS_H
#define P3DP_FLOWS_H

#include "p3dp.h"

/* The table is split into this many shards, each with its own lock, hash
 * buckets, LRU list and free list, so that two packet workers touching
 * different flows rarely meet on the same lock. */
#define FLOWS_SHARDS 16u

/* Entries a full shard looks at, from its least recently used, to find
 * one to give up (an idle one, else a non-TCP one, else the oldest). */
#define FLOWS_EVICT_SCAN 8u

/* Octets of the local end's first packet kept for the ICMP quote of a
 * non-TCP flow: an IPv4 header with options (60) plus 68 octets of payload,
 * or an IPv6 header (40) with 88 octets of extension and upper-layer
 * headers. RFC 792 asks for the header plus 64 bits; RFC 1812 §4.3.2.3 and
 * RFC 4443 §2.4(c) allow more. */
#define FLOWS_QUOTE_MAX 128u

/* Hop limit / TTL of the packets we generate (Linux's default). */
#define FLOWS_TTL 64u

#endif
