/* Runs a command under the sandbox llmd.service asks systemd for, as far as a test can build it
 * without systemd: SystemCallFilter= as an allow-list of syscall numbers (the others fail with
 * EPERM: SystemCallErrorNumber=EPERM; other architectures too: SystemCallArchitectures=native),
 * NoNewPrivileges=yes, MemoryDenyWriteExecute=yes (the kernel's PR_SET_MDWE, Linux 6.3 and later,
 * which is what newer systemd uses; skipped with a note on older kernels), and, when started as
 * root, uid/gid 65534 (User=: a static unprivileged user).
 *   sandbox_exec NUMBERS_FILE PROGRAM [ARGS...]    NUMBERS_FILE: allowed syscall numbers */
#include <errno.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "sandbox_exec: add this architecture's AUDIT_ARCH"
#endif

#define MAX_INSNS 4000

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s NUMBERS_FILE PROGRAM [ARGS...]\n", argv[0]);
    return 2;
  }
  static struct sock_filter f[MAX_INSNS];
  int n = 0;
  const unsigned deny = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, deny);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
  FILE* in = fopen(argv[1], "r");
  if (in == NULL) {
    perror(argv[1]);
    return 2;
  }
  unsigned nr;
  int allowed = 0;
  while (fscanf(in, "%u", &nr) == 1 && n + 3 < MAX_INSNS) {
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    ++allowed;
  }
  fclose(in);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, deny);

  if (prctl(65 /* PR_SET_MDWE */, 1 /* PR_MDWE_REFUSE_EXEC_GAIN */, 0, 0, 0) != 0) {
    fprintf(stderr, "sandbox_exec: no PR_SET_MDWE in this kernel: W^X not enforced\n");
  }
  if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)) {
    perror("sandbox_exec: dropping to uid 65534");
    return 2;
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    perror("sandbox_exec: PR_SET_NO_NEW_PRIVS");
    return 2;
  }
  struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
    perror("sandbox_exec: PR_SET_SECCOMP");
    return 2;
  }
  fprintf(stderr, "sandbox_exec: %d system calls allowed, uid %d\n", allowed, (int)getuid());
  execv(argv[2], argv + 2);
  perror(argv[2]);
  return 127;
}
