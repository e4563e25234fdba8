/*
 * The parts of the backend interface that do not depend on the
 * implementation (backend_api.h): page release, destruction, the
 * per-thread error detail, and the name filter every backend applies. It
 * includes no backend; backend.c, the factory, is the one file that does.
 *
 * The error detail lives in a thread-local buffer, so a backend records it
 * where the failure happens and the caller that decides to log reads it on
 * the same thread, without a lock and without threading a buffer through
 * every method.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfs/backend_api.h"

static __thread char backend_error[BACKEND_ERROR_MAX];

void backend_page_release(struct backend_page *page)
{
	if (!page)
		return;
	for (size_t i = 0; page->entries && i < page->n; i++)
		free(page->entries[i].path);
	free(page->entries);
	free(page->cursor);
	memset(page, 0, sizeof(*page));
}

void backend_destroy(struct backend *be)
{
	if (!be)
		return;
	be->ops->destroy(be);
}

void backend_set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(backend_error, sizeof(backend_error), fmt, ap);
	va_end(ap);
}

const char *backend_last_error(void)
{
	return backend_error;
}

/*
 * Length of the well-formed UTF-8 sequence at @s, or 0 if it is malformed:
 * truncated, a stray continuation byte, an overlong form, a UTF-16
 * surrogate (U+D800..U+DFFF) or beyond U+10FFFF.
 */
static size_t utf8_seq_len(const unsigned char *s)
{
	unsigned char c = s[0];
	size_t n, i;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000))
		return 0;
	if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

bool backend_name_ok(const char *name)
{
	const unsigned char *p = (const unsigned char *)name;
	size_t len, n;

	if (!name)
		return false;
	len = strlen(name);
	if (len == 0 || len > BACKEND_NAME_MAX)
		return false;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return false;
	if (name[len - 1] == ' ')
		return false;
	while (*p) {
		if (*p == '/' || *p == '\\' || *p == 0x7f)
			return false;
		n = utf8_seq_len(p);
		if (n == 0)
			return false;
		p += n;
	}
	return true;
}

bool backend_path_ok(const char *path, bool allow_root,
		     bool (*name_ok)(const char *name))
{
	char comp[BACKEND_NAME_MAX + 1];
	const char *p, *end;
	size_t len;

	if (!path)
		return false;
	if (path[0] == '\0')
		return allow_root;
	if (path[0] != '/')
		return false;
	for (p = path + 1;; p = end + 1) {
		end = strchr(p, '/');
		len = end ? (size_t)(end - p) : strlen(p);
		if (len == 0 || len > BACKEND_NAME_MAX)
			return false;
		memcpy(comp, p, len);
		comp[len] = '\0';
		if (!name_ok(comp))
			return false;
		if (!end)
			return true;
	}
}
