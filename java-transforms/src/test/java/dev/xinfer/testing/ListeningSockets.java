package dev.xinfer.testing;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * The TCP sockets that this JVM and its child processes listen on, read from Linux's {@code /proc}:
 * what a port scan of the machine would find.
 */
public final class ListeningSockets {
  private static final String LISTEN = "0A";

  private ListeningSockets() {}

  /** Listening addresses of this process and its descendants, as {@code host:port}. */
  public static Set<String> ofThisJvmAndChildren() {
    Set<String> all = new HashSet<>();
    byProcess(List.of(ProcessHandle.current().pid())).values().forEach(all::addAll);
    return all;
  }

  /**
   * The listening addresses of each of {@code roots} and their descendants, by pid. Fails when a
   * running process's descriptors cannot be read: a socket check that cannot see must not pass.
   */
  public static Map<Long, Set<String>> byProcess(Collection<Long> roots) {
    Map<Long, Set<String>> inodesByPid = new HashMap<>();
    for (long root : roots) {
      Optional<ProcessHandle> handle = ProcessHandle.of(root);
      if (handle.isEmpty()) {
        throw new IllegalStateException("process " + root + " is not running");
      }
      Stream.concat(Stream.of(handle.get()), handle.get().descendants())
          .map(ProcessHandle::pid)
          .forEach(pid -> inodesByPid.put(pid, socketInodes(pid)));
    }
    Map<String, String> listeningByInode = new HashMap<>();
    for (String table : List.of("/proc/net/tcp", "/proc/net/tcp6")) {
      try {
        for (String line : Files.readAllLines(Paths.get(table), StandardCharsets.US_ASCII)) {
          String[] f = line.trim().split("\\s+");
          if (f.length > 9 && LISTEN.equals(f[3])) {
            listeningByInode.put(f[9], address(f[1]));
          }
        }
      } catch (IOException e) {
        throw new IllegalStateException("cannot read " + table + " (Linux only)", e);
      }
    }
    Map<Long, Set<String>> listening = new HashMap<>();
    inodesByPid.forEach(
        (pid, inodes) ->
            listening.put(
                pid,
                inodes.stream()
                    .map(listeningByInode::get)
                    .filter(Objects::nonNull)
                    .collect(Collectors.toSet())));
    return listening;
  }

  /** Whether a {@code host:port} from {@link #ofThisJvmAndChildren} is a loopback address. */
  public static boolean isLoopback(String hostPort) {
    String host = hostPort.substring(0, hostPort.lastIndexOf(':'));
    return host.startsWith("127.") || host.equals("::1") || host.startsWith("::ffff:127.");
  }

  private static Set<String> socketInodes(long pid) {
    Set<String> inodes = new HashSet<>();
    Path fdDir = Paths.get("/proc", "" + pid, "fd");
    try (DirectoryStream<Path> fds = Files.newDirectoryStream(fdDir)) {
      for (Path fd : fds) {
        try {
          String target = Files.readSymbolicLink(fd).toString();
          if (target.startsWith("socket:[")) {
            inodes.add(target.substring(8, target.length() - 1));
          }
        } catch (NoSuchFileException e) {
          // The descriptor closed while we looked.
        } catch (IOException e) {
          if (!isAlive(pid)) {
            return inodes; // the process ended while we looked (ESRCH: "No such process")
          }
          throw new IllegalStateException("cannot read " + fd + ": " + e, e);
        }
      }
    } catch (NoSuchFileException e) {
      // The process ended while we looked.
    } catch (IOException e) {
      if (isAlive(pid)) {
        throw new IllegalStateException("cannot read the descriptors of process " + pid, e);
      }
    }
    return inodes;
  }

  /** Whether the process runs: not ended, and not a zombie (whose descriptors are gone). */
  private static boolean isAlive(long pid) {
    if (!ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
      return false;
    }
    try {
      String stat = Files.readString(Paths.get("/proc", "" + pid, "stat"));
      char state = stat.charAt(stat.lastIndexOf(')') + 2);
      return state != 'Z' && state != 'X';
    } catch (IOException | RuntimeException e) {
      return false; // ended meanwhile
    }
  }

  private static String address(String hex) {
    String[] hostPort = hex.split(":");
    int port = Integer.parseInt(hostPort[1], 16);
    String h = hostPort[0];
    if (h.length() == 8) {
      return ipv4(h) + ":" + port;
    }
    if (h.startsWith("0000000000000000FFFF0000")) {
      return "::ffff:" + ipv4(h.substring(24)) + ":" + port;
    }
    if (h.equals("00000000000000000000000001000000")) {
      return "::1:" + port;
    }
    if (h.equals("00000000000000000000000000000000")) {
      return ":::" + port;
    }
    return h.toLowerCase(Locale.ROOT) + ":" + port;
  }

  /** /proc prints an IPv4 address as a little-endian hex word. */
  private static String ipv4(String h) {
    return Integer.parseInt(h.substring(6, 8), 16)
        + "."
        + Integer.parseInt(h.substring(4, 6), 16)
        + "."
        + Integer.parseInt(h.substring(2, 4), 16)
        + "."
        + Integer.parseInt(h.substring(0, 2), 16);
  }
}
