/*
 * The backend factory (backend.h): creates the backend the configuration
 * names. The one file that includes the implementations (backend_local.h,
 * backend_dropbox.h); they and their callers share only backend_api.h. The
 * thread's cancel flag is set here too: it reaches the Dropbox backend's
 * transport (http.h), which no caller of the backends should know of.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "hfs/err.h"
#include "hfs/backend.h"
#include "hfs/backend_dropbox.h"
#include "hfs/backend_local.h"
#include "hfs/config.h"
#include "hfs/http.h"

void backend_set_thread_quick(bool quick)
{
	http_set_thread_quick(quick);
}

void backend_set_thread_deadline(int64_t deadline_ns)
{
	http_set_thread_deadline(deadline_ns);
}

int64_t backend_mono_ns(void)
{
	return http_mono_ns();
}

void backend_set_thread_cancel(const atomic_bool *flag)
{
	http_set_thread_cancel(flag);
}

int backend_create(const struct hfs_config *cfg, bool fresh_cache,
		   struct backend **out, char *err, size_t errlen)
{
	struct backend *be = NULL;
	int rc;

	err_set(err, errlen, "%s", "");
	switch (cfg->backend) {
	case BACKEND_LOCAL:
		backend_set_error("%s", "");
		rc = backend_local_open(cfg->remote_dir, fresh_cache, &be);
		if (rc < 0) {
			const char *detail = backend_last_error();

			err_set(err, errlen, "local backend in %s: %s",
				cfg->remote_dir ? cfg->remote_dir : "(unset)",
				detail[0] ? detail : strerror(-rc));
			return rc;
		}
		break;
	case BACKEND_DROPBOX:
		rc = backend_dropbox_create(cfg, &be, err, errlen);
		if (rc < 0)
			return rc;
		break;
	default:
		err_set(err, errlen, "unknown backend kind %d", cfg->backend);
		return -EINVAL;
	}
	*out = be;
	return 0;
}
