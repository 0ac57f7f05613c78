package dev.xinfer.pipelines;

import static org.hamcrest.MatcherAssert.assertThat;
import static org.hamcrest.Matchers.containsString;
import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertThrows;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.runner.RunWith;
import org.junit.runners.JUnit4;

@RunWith(JUnit4.class)
public class ProfilesTest {
  @Rule public final TemporaryFolder tmp = new TemporaryFolder();

  @Test
  public void profileFlagsComeFirstAndTheCommandLineWins() throws Exception {
    Path profile = tmp.newFile("p.conf").toPath();
    Files.write(
        profile,
        List.of("# a comment", "--runner=FlinkRunner", "", "--parallelism=2", "--streaming"));
    String[] expanded =
        Profiles.expand(new String[] {"--profile=" + profile, "--parallelism=1", "--input=x"});
    assertArrayEquals(
        new String[] {"--runner=FlinkRunner", "--streaming", "--parallelism=1", "--input=x"},
        expanded);
  }

  @Test
  public void theProjectsProfilesAreFoundByName() {
    String[] expanded = Profiles.expand(new String[] {"--profile", "local-spark"});
    assertThat(String.join(" ", expanded), containsString("--runner=SparkRunner"));
  }

  @Test
  public void withoutAProfileTheArgumentsStayAsTheyAre() {
    String[] args = {"--runner=FlinkRunner"};
    assertArrayEquals(args, Profiles.expand(args));
  }

  @Test
  public void anUnknownProfileSaysWhereItLooked() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class, () -> Profiles.expand(new String[] {"--profile=nope"}));
    assertThat(e.getMessage(), containsString("No profile 'nope': looked for"));
    assertThat(e.getMessage(), containsString("runners-config/nope.conf"));
  }
}
