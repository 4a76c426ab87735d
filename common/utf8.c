/* utf8.c — see utf8.h. */
#include "utf8.h"

size_t utf8_char_len(const unsigned char *s, size_t len)
{
	if (len == 0 || s[0] == 0)
		return 0;
	if (s[0] < 0x80)
		return 1;
	size_t n;
	unsigned cp;
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2;
		cp = s[0] & 0x1fu;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3;
		cp = s[0] & 0x0fu;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4;
		cp = s[0] & 0x07u;
	} else {
		return 0; /* a continuation byte, or 0xf8..0xff */
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3fu);
	}
	static const unsigned MIN_OF_LEN[5] = {0, 0, 0x80, 0x800, 0x10000};
	if (cp < MIN_OF_LEN[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

size_t utf8_copy(char *dst, size_t cap, const char *src, size_t len)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t out = 0, i = 0;
	while (i < len) {
		size_t n = utf8_char_len(s + i, len - i);
		size_t take = n ? n : 1;
		if (out + take + 1 > cap)
			break;
		for (size_t k = 0; k < take; k++)
			dst[out + k] = n ? (char)s[i + k] : '?';
		out += take;
		i += take;
	}
	dst[out] = '\0';
	return out;
}
