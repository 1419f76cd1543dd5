/*
 * replay.c — anti-replay window in the style of RFC 6479.
 *
 * The bitmap is a ring of REPLAY_WORDS 64-bit words indexed by seq / 64.
 * Advancing the window clears whole words instead of shifting bits, so the
 * cost does not grow with the jump. The usable window is
 * P3DP_REPLAY_WINDOW = REPLAY_BITS - 64 (the word holding `top` is shared
 * with seqs that will reuse it). RFC 4303 §3.4.3: a seq right of the window
 * is new; inside, new unless its bit is set; left of it, too old. The window
 * moves only in p3dp_replay_update, called after authentication.
 */
#include "p3dp_internal.h"

#include <string.h>

int p3dp_replay_check(const struct p3dp_replay *w, uint64_t seq)
{
    if (seq == 0)
        return -P3R_DP_TOO_OLD;                  /* seq starts at 1 (DESIGN.md §3) */
    if (seq > w->top)
        return 0;
    if (w->top - seq >= P3DP_REPLAY_WINDOW)
        return -P3R_DP_TOO_OLD;
    if (w->bitmap[(seq >> 6) % REPLAY_WORDS] & (1ull << (seq & 63)))
        return -P3R_DP_REPLAY;
    return 0;
}

int p3dp_replay_update(struct p3dp_replay *w, uint64_t seq)
{
    int rc = p3dp_replay_check(w, seq);
    if (rc)
        return rc;
    if (seq > w->top) {
        uint64_t old_word = w->top >> 6, new_word = seq >> 6;
        if (new_word - old_word >= REPLAY_WORDS) {
            memset(w->bitmap, 0, sizeof(w->bitmap));
        } else {
            for (uint64_t i = old_word + 1; i <= new_word; i++)
                w->bitmap[i % REPLAY_WORDS] = 0;
        }
        w->top = seq;
    }
    w->bitmap[(seq >> 6) % REPLAY_WORDS] |= 1ull << (seq & 63);
    return 0;
}
