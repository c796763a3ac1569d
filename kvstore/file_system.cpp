// POSIX FileSystem (see file_system.h).
#include "kvstore/file_system.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace llmd::kvstore {
namespace {

Error io(const std::string& what, const std::filesystem::path& path, int err) {
  Errc code = Errc::io_error;
  if (err == ENOSPC || err == EDQUOT) code = Errc::resource_exhausted;
  if (err == EACCES || err == EPERM || err == EROFS) code = Errc::permission_denied;
  if (err == ENOENT) code = Errc::not_found;
  return Error(code, what + " " + path.string() + ": " + std::generic_category().message(err));
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

class PosixFileSystem final : public FileSystem {
 public:
  Status write_file(const std::filesystem::path& path, std::span<const std::uint8_t> bytes) override {
    const std::filesystem::path tmp = path.string() + ".tmp";
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (fd.get() < 0) return io("cannot create", tmp, errno);
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::unlink(tmp.c_str());
        return io("cannot write", tmp, err);
      }
      done += static_cast<std::size_t>(n);
    }
    if (::close(fd.release()) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      return io("cannot write", tmp, err);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      return io("cannot rename", tmp, err);
    }
    return {};
  }

  Status read_file(const std::filesystem::path& path, std::uint64_t max_bytes, std::vector<std::uint8_t>& out) override {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return io("cannot open", path, errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return io("cannot stat", path, errno);
    if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
      return Error(Errc::corrupt, path.string() + " is larger than any chunk can be");
    }
    out.resize(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::read(fd.get(), out.data() + done, out.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return io("cannot read", path, errno);
      }
      if (n == 0) break;
      done += static_cast<std::size_t>(n);
    }
    out.resize(done);
    return {};
  }

  Status remove_file(const std::filesystem::path& path) override {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return io("cannot remove", path, errno);
    return {};
  }

  Status make_dirs(const std::filesystem::path& path) override {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) return io("cannot create directory", path, ec.value());
    return {};
  }

  Result<std::vector<DirEntry>> list_dir(const std::filesystem::path& path) override {
    std::error_code ec;
    std::vector<DirEntry> out;
    std::filesystem::directory_iterator it(path, ec);
    if (ec) return io("cannot list", path, ec.value());
    for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
      std::error_code ignored;
      out.push_back({it->path().filename().string(), it->is_directory(ignored)});
    }
    if (ec) return io("cannot list", path, ec.value());
    return out;
  }

  Status remove_tree(const std::filesystem::path& path) override {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    if (ec && ec.value() != ENOENT) return io("cannot remove", path, ec.value());
    return {};
  }

  Status remove_empty_dir(const std::filesystem::path& path) override {
    if (::rmdir(path.c_str()) == 0 || errno == ENOENT) return {};
    if (errno == ENOTEMPTY || errno == EEXIST) return Error(Errc::busy, path.string() + " is not empty");
    return io("cannot remove", path, errno);
  }

  Result<std::uint64_t> free_bytes(const std::filesystem::path& path) override { return free_bytes_at(path); }
};

}  // namespace

std::shared_ptr<FileSystem> real_file_system() { return std::make_shared<PosixFileSystem>(); }

Result<std::uint64_t> free_bytes_at(const std::filesystem::path& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return io("cannot stat the file system of", path, errno);
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace llmd::kvstore
