package dev.xinfer.runtime.python;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.attribute.PosixFilePermission;
import java.security.SecureRandom;
import java.util.EnumSet;
import java.util.HexFormat;
import java.util.Set;
import org.apache.beam.sdk.annotations.Internal;

/**
 * The secrets that xinfer's Python services check on every call.
 *
 * <p>The services xinfer starts get a fresh random secret for the run on their standard input (it
 * is never written to disk or logged); services started by hand ({@code xinfer-expansion-service},
 * {@code xinfer-worker-pool}, {@code ./xinfer cluster up}) read theirs from a file that only its
 * owner can read, and the Java side reads the same file. The expansion service takes the secret in
 * the {@value #HEADER} header of each call; a worker pool takes it in the {@value #POOL_PARAM}
 * parameter of the environment it serves, which Beam's runners send with every request to start a
 * worker.
 */
@Internal
public final class ServiceSecret {
  /** The gRPC metadata key the expansion service checks. */
  public static final String HEADER = "xinfer-token";

  /** The EXTERNAL environment's parameter a worker pool checks. */
  public static final String POOL_PARAM = "xinfer_token";

  private static final int MIN_LENGTH = 32;
  private static final SecureRandom RANDOM = new SecureRandom();
  private static final Set<PosixFilePermission> OTHERS =
      EnumSet.of(
          PosixFilePermission.GROUP_READ,
          PosixFilePermission.GROUP_WRITE,
          PosixFilePermission.GROUP_EXECUTE,
          PosixFilePermission.OTHERS_READ,
          PosixFilePermission.OTHERS_WRITE,
          PosixFilePermission.OTHERS_EXECUTE);

  private ServiceSecret() {}

  /** A new random secret: 32 bytes, hex. */
  public static String generate() {
    byte[] bytes = new byte[32];
    RANDOM.nextBytes(bytes);
    return HexFormat.of().formatHex(bytes);
  }

  /**
   * The secret in {@code file}, which must be a regular file that only its owner can read (mode
   * 0600 or stricter); {@code what} names the setting that gave the file, for the messages.
   */
  public static String read(String file, String what) {
    Path path = Paths.get(file).toAbsolutePath();
    if (!Files.isRegularFile(path, LinkOption.NOFOLLOW_LINKS)) {
      throw new IllegalArgumentException(
          String.format(
              "%s: no secret file at %s. Name the file the service was started with "
                  + "(--secret-file; ./xinfer cluster up writes .xinfer/clusters/<name>/pool.secret).",
              what, path));
    }
    try {
      Set<PosixFilePermission> permissions = Files.getPosixFilePermissions(path);
      permissions.retainAll(OTHERS);
      if (!permissions.isEmpty()) {
        throw new IllegalArgumentException(
            String.format(
                "%s: the secret file %s can be read or written by other users (%s); "
                    + "make it private with chmod 600 %s.",
                what, path, permissions, path));
      }
      String secret = new String(Files.readAllBytes(path), StandardCharsets.UTF_8).trim();
      if (secret.length() < MIN_LENGTH || secret.chars().anyMatch(Character::isWhitespace)) {
        throw new IllegalArgumentException(
            String.format(
                "%s: the secret file %s does not hold one secret of at least %d characters "
                    + "(no spaces); let the service write it (--secret-file creates a missing file).",
                what, path, MIN_LENGTH));
      }
      return secret;
    } catch (IOException e) {
      throw new IllegalArgumentException(
          String.format("%s: cannot read the secret file %s: %s", what, path, e.getMessage()), e);
    }
  }
}
