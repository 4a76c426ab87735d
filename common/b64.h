/* b64.h — standard base64 (RFC 4648, with padding) on OpenSSL's EVP_*Block.
 * Used for PNGs in A1111 JSON answers. Pure functions, thread-safe. */
#ifndef SDGATE_B64_H
#define SDGATE_B64_H

#include <stddef.h>

/* Length of the encoding of n bytes, without the terminating NUL. */
size_t b64_encoded_len(size_t n);
/* Encodes n bytes into out (b64_encoded_len(n) + 1 bytes, NUL-terminated). */
void b64_encode(char *out, const unsigned char *in, size_t n);
/* Returns a malloc'd NUL-terminated encoding (caller frees), or NULL. */
char *b64_encode_new(const unsigned char *in, size_t n);
/* Decodes text (whitespace not allowed, padding required, an optional
 * "data:...;base64," prefix skipped). Returns a malloc'd buffer (caller frees)
 * and sets *out_len, or NULL if the text is not valid base64. */
unsigned char *b64_decode_new(const char *text, size_t len, size_t *out_len);
/* The base64 part of text: after an optional "data:...;base64," prefix;
 * *len is updated to its length. */
const char *b64_payload(const char *text, size_t *len);
/* 1 when text (no prefix) is padded standard base64: a multiple of 4 long,
 * the alphabet only, '=' only as the last one or two characters. Checks
 * without decoding, so it costs no allocation on large inputs. */
int b64_is_valid(const char *text, size_t len);

#endif
