/*
 * sd_notify's datagram protocol (see notify.h).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "hfs/notify.h"

bool notify_wanted(void)
{
	const char *s = getenv("NOTIFY_SOCKET");
	return s && (s[0] == '/' || s[0] == '@') && s[1];
}

int notify_send(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (!notify_wanted())
		return 0;
	size_t len = strlen(path);
	if (len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract: no terminating NUL */
	socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				     len + (path[0] == '@' ? 0 : 1));
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ssize_t n;
	do {
		n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL,
			   (struct sockaddr *)&sa, alen);
	} while (n < 0 && errno == EINTR);
	int rc = n < 0 ? -errno : 1;
	close(fd);
	return rc;
}
