/* libFuzzer target: the prompt-weight parser (kernels/prompt.c, A1111's
 * attention syntax), which every prompt from the network goes through. */
#include "prompt.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	static struct prompt p;
	int n = prompt_parse(text, &p);
	if (n < 0 || n > PROMPT_MAX_WORDS)
		abort();
	for (int i = 0; i < n; i++)
		if (strlen(p.words[i].text) >= PROMPT_WORD_LEN)
			abort();
	free(text);
	return 0;
}
