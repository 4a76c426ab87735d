/* b64.c — see b64.h. OpenSSL does the work; this only sizes buffers and
 * undoes EVP_DecodeBlock's habit of counting padding as zero bytes. */
#include "b64.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

size_t b64_encoded_len(size_t n) { return (n + 2) / 3 * 4; }

void b64_encode(char *out, const unsigned char *in, size_t n)
{
	/* EVP_EncodeBlock takes an int: feed it in chunks that are a multiple of 3. */
	const size_t CHUNK = (size_t)3 << 20;
	while (n > CHUNK) {
		EVP_EncodeBlock((unsigned char *)out, in, (int)CHUNK);
		out += CHUNK / 3 * 4;
		in += CHUNK;
		n -= CHUNK;
	}
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	out[b64_encoded_len(n)] = '\0';
}

char *b64_encode_new(const unsigned char *in, size_t n)
{
	char *out = malloc(b64_encoded_len(n) + 1);
	if (out)
		b64_encode(out, in, n);
	return out;
}

const char *b64_payload(const char *text, size_t *len)
{
	const char *comma = *len > 5 && strncmp(text, "data:", 5) == 0 ? memchr(text, ',', *len) : NULL;
	if (!comma)
		return text;
	*len -= (size_t)(comma + 1 - text);
	return comma + 1;
}

/* 1 for the 64 characters of the alphabet: one load a character (every
 * image a backend sends is checked with it). */
static const unsigned char B64_CHAR[256] = {
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1,
	['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1,
	['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1,
	['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
	['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
	['8'] = 1, ['9'] = 1, ['+'] = 1, ['/'] = 1,
};

int b64_is_valid(const char *text, size_t len)
{
	if (len % 4 != 0)
		return 0;
	size_t body = len;
	if (body && text[body - 1] == '=')
		body--;
	if (body && text[body - 1] == '=')
		body--;
	const unsigned char *p = (const unsigned char *)text;
	unsigned char all = 1;
	for (size_t i = 0; i < body; i++) /* no early exit: a loop the compiler can vectorise */
		all &= B64_CHAR[p[i]];
	return all;
}

unsigned char *b64_decode_new(const char *text, size_t len, size_t *out_len)
{
	text = b64_payload(text, &len);
	if (len % 4 != 0 || len > (size_t)1 << 30)
		return NULL;
	unsigned char *out = malloc(len / 4 * 3 + 1);
	if (!out)
		return NULL;
	int n = len ? EVP_DecodeBlock(out, (const unsigned char *)text, (int)len) : 0;
	if (n < 0) {
		free(out);
		return NULL;
	}
	size_t pad = 0;
	if (len >= 1 && text[len - 1] == '=')
		pad++;
	if (len >= 2 && text[len - 2] == '=')
		pad++;
	*out_len = (size_t)n - pad;
	return out;
}
