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

static int is_b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int b64_is_valid(const char *text, size_t len)
{
	if (len % 4 != 0)
		return 0;
	size_t body = len;
	if (body && text[body - 1] == '=')
		body--;
	if (body && text[body - 1] == '=')
		body--;
	for (size_t i = 0; i < body; i++)
		if (!is_b64_char((unsigned char)text[i]))
			return 0;
	return 1;
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
