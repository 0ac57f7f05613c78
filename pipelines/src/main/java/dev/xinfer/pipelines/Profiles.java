package dev.xinfer.pipelines;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * Runner profiles: {@code runners-config/NAME.conf}, one pipeline flag per line ({@code #}
 * comments). {@code --profile=NAME} (or a path to a {@code .conf} file) among the arguments puts
 * the profile's flags first; a flag given on the command line replaces the profile's.
 */
final class Profiles {
  static final String DIRECTORY = "runners-config";

  private Profiles() {}

  /** The arguments with {@code --profile} expanded; unchanged when there is none. */
  static String[] expand(String[] args) {
    List<String> rest = new ArrayList<>();
    String profile = null;
    for (int i = 0; i < args.length; i++) {
      if (args[i].startsWith("--profile=")) {
        profile = args[i].substring("--profile=".length());
      } else if (args[i].equals("--profile") && i + 1 < args.length) {
        profile = args[++i];
      } else {
        rest.add(args[i]);
      }
    }
    if (profile == null) {
      return args;
    }
    Map<String, String> flags = new LinkedHashMap<>();
    for (String flag : read(locate(profile))) {
      flags.put(name(flag), flag);
    }
    for (String flag : rest) {
      flags.remove(name(flag));
    }
    List<String> merged = new ArrayList<>(flags.values());
    merged.addAll(rest);
    return merged.toArray(new String[0]);
  }

  private static String name(String flag) {
    int eq = flag.indexOf('=');
    return eq < 0 ? flag : flag.substring(0, eq);
  }

  /** The profile file: a path, or NAME in runners-config/ of the working directory or a parent. */
  static Path locate(String profile) {
    Path direct = Paths.get(profile);
    if (profile.endsWith(".conf") && Files.isRegularFile(direct)) {
      return direct;
    }
    List<String> tried = new ArrayList<>();
    for (Path dir = Paths.get("").toAbsolutePath(); dir != null; dir = dir.getParent()) {
      Path candidate = dir.resolve(DIRECTORY).resolve(profile + ".conf");
      if (Files.isRegularFile(candidate)) {
        return candidate;
      }
      tried.add(candidate.toString());
    }
    throw new IllegalArgumentException(
        String.format(
            "No profile '%s': looked for %s. Name a file in runners-config/ (e.g. local-flink) "
                + "or give the path of a .conf file.",
            profile, tried.isEmpty() ? profile : tried.get(0) + " and its parents"));
  }

  private static List<String> read(Path file) {
    try {
      return Files.readAllLines(file, StandardCharsets.UTF_8).stream()
          .map(String::trim)
          .filter(line -> !line.isEmpty() && !line.startsWith("#"))
          .collect(Collectors.toList());
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read profile " + file, e);
    }
  }
}
