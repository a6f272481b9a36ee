/*
 * Unicode tables for BERT's normalizer, generated into wordpiece_tables.c
 * by tests/reference/make_wordpiece_tables.py; read by wordpiece.c alone.
 */
#ifndef MF_WORDPIECE_H
#define MF_WORDPIECE_H

#include <stdint.h>

typedef struct wp_range { uint32_t lo, hi; } wp_range;  /* inclusive */
typedef struct wp_map { uint32_t cp, to[3]; } wp_map;   /* to ends at the first 0 */

extern const wp_range wp_nonspacing_marks[], wp_other_chars[];  /* Mn; Cc Cf Cn Co Cs */
extern const int wp_nonspacing_marks_count, wp_other_chars_count;
extern const wp_map wp_strip_map[], wp_lower_map[];  /* NFD without Mn; full lowercase */
extern const int wp_strip_map_count, wp_lower_map_count;

#endif
