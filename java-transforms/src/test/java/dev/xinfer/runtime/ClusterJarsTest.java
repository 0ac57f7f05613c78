package dev.xinfer.runtime;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.jar.Attributes;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;
import java.util.jar.JarOutputStream;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.flink.util.FlinkUserCodeClassLoaders;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class ClusterJarsTest {
  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  /** A jar holding one resource, {@code name}, whose content is {@code content}. */
  private Path jarWith(Path jar, String name, String content) throws IOException {
    Files.createDirectories(jar.getParent());
    try (JarOutputStream out = new JarOutputStream(Files.newOutputStream(jar))) {
      out.putNextEntry(new JarEntry(name));
      out.write(content.getBytes(StandardCharsets.UTF_8));
      out.closeEntry();
    }
    return jar;
  }

  @Test
  public void aJobShipsItsOwnJarsAndPointsAtTheRuntimeOnTheNodes() throws Exception {
    Path nodeLib = tmp.newFolder("node-lib").toPath();
    Path runtimeBeam = jarWith(nodeLib.resolve("beam-core-1.0.jar"), "beam.txt", "node");
    Path runtimeXinfer = jarWith(nodeLib.resolve("xinfer-1.0.jar"), "xinfer.txt", "node");
    Path client = tmp.newFolder("client").toPath();
    // The client's own copy of a runtime jar (same file name) stays home; its own code ships.
    Path clientBeam = jarWith(client.resolve("m2/beam-core-1.0.jar"), "beam.txt", "client");
    Path userJar = jarWith(client.resolve("my-pipeline.jar"), "mine.txt", "user");

    List<String> staged =
        ClusterJars.forJob(
            List.of(clientBeam.toString(), userJar.toString()),
            List.of(runtimeXinfer.toString(), runtimeBeam.toString()),
            PipelineOptionsFactory.create(),
            tmp.newFolder("packed").toPath());

    assertEquals(2, staged.size());
    assertEquals(ClusterJars.RUNTIME_JAR, new File(staged.get(0)).getName());
    assertEquals(userJar.toString(), staged.get(1));
    try (JarFile pointer = new JarFile(staged.get(0))) {
      assertEquals(
          runtimeXinfer.toFile().toURI() + " " + runtimeBeam.toFile().toURI(),
          pointer.getManifest().getMainAttributes().getValue(Attributes.Name.CLASS_PATH));
    }
  }

  @Test
  public void flinksUserCodeClassLoaderLoadsTheRuntimeThatThePointerJarNames() throws Exception {
    Path runtime = jarWith(tmp.getRoot().toPath().resolve("node lib/runtime.jar"), "r.txt", "node");
    Path pointer =
        ClusterJars.runtimeJar(
            tmp.getRoot().toPath().resolve("pointer.jar"), List.of(runtime.toString()));
    ClassLoader parent = ClassLoader.getPlatformClassLoader();
    // The class loader a TaskManager builds from a job's jars (child-first, Flink's default).
    try (FlinkUserCodeClassLoaders.SafetyNetWrapperClassLoader loader =
        (FlinkUserCodeClassLoaders.SafetyNetWrapperClassLoader)
            FlinkUserCodeClassLoaders.childFirst(
                new URL[] {pointer.toUri().toURL()}, parent, new String[0], e -> {}, true)) {
      URL found = loader.getResource("r.txt");
      assertNotNull("the pointer jar's Class-Path (a path with a space) is followed", found);
      try (InputStream in = found.openStream()) {
        assertEquals("node", new String(in.readAllBytes(), StandardCharsets.UTF_8));
      }
      assertNull(loader.getResource("not-there.txt"));
    }
  }

  @Test
  public void theRuntimeListSkipsCommentsAndAnUnreadableOneNamesTheFix() throws Exception {
    Path list = tmp.newFile("runtime-jars.txt").toPath();
    Files.writeString(list, "# xinfer's job runtime\n/opt/a.jar\n\n  /opt/b.jar  \n");
    assertEquals(List.of("/opt/a.jar", "/opt/b.jar"), ClusterJars.runtimeListedIn(list, "key"));

    IllegalStateException e =
        assertThrows(
            IllegalStateException.class,
            () ->
                ClusterJars.runtimeListedIn(
                    tmp.getRoot().toPath().resolve("gone.txt"), "xinfer.cluster.runtime-jars"));
    assertThat(e.getMessage(), containsString("xinfer.cluster.runtime-jars names"));
    assertThat(e.getMessage(), containsString("gone.txt"));
    assertThat(e.getMessage(), containsString("./xinfer cluster up flink"));
  }
}
